"""Tags of an image set, from its metadata and the pipeline's events (pure): rules as data, never PHI.

A :class:`TagRule` maps one *source* to one tag key.  Sources:

``attribute:<Keyword>``
    The attribute's value in the metadata, looked up at the patient, study, series and then first
    instance level (a multi-valued attribute's values joined by ``\\``).
``sop-class``
    The short name (pydicom's keyword, e.g. ``CTImageStorage``) of the first instance's SOP Class UID.
``instances`` / ``frames``
    How many instances the image set holds, and how many frames.
``deidentification:status`` / ``deidentification:profile``
    From "Image Set Ready": ``deidentified`` or ``skipped``; the edition and the options applied.
``import-job`` / ``batch``
    The import job and the batch the image set came from.
``pipeline-version``
    :data:`ahi_pipeline.__version__`.

:data:`DEFAULT_RULES` tag modality, body part, SOP class, counts, de-identification status and profile,
import job, batch and pipeline version, under the ``pipeline:`` prefix.  A deployment adds its own rules
with the ``TagRules`` parameter (``key=Keyword`` pairs separated by ``;``, see :func:`parse_rules`), each
mapping a metadata attribute to a tag.

Values are normalized to the characters AWS allows in tags (letters, digits, spaces and ``_.:/=+-@``;
anything else becomes ``_``) and truncated to 256 characters, keys to 128.  :func:`guard` drops any tag
whose value equals or contains an identifying value of the image set (the values of the attributes the
de-identification profile changes); :func:`merge` keeps every tag someone else set and the limit of 50.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "DEFAULT_RULES",
    "MAX_TAGS",
    "PIPELINE_PREFIX",
    "Merge",
    "TagRule",
    "TagRuleError",
    "compute_tags",
    "computed_keys",
    "guard",
    "merge",
    "normalize_key",
    "normalize_value",
    "parse_rules",
]

MAX_TAGS: Final = 50
MAX_KEY: Final = 128
MAX_VALUE: Final = 256
PIPELINE_PREFIX: Final = "pipeline:"
#: Tag keys HealthImaging accepts (botocore's model: no ``aws:`` prefix).
_KEY = re.compile(r"(?!aws:)[a-zA-Z0-9+\-=._:/]+")
_KEY_OUT = re.compile(r"[^a-zA-Z0-9+\-=._:/]")
_SOURCES: Final = frozenset(
    {
        "sop-class",
        "instances",
        "frames",
        "deidentification:status",
        "deidentification:profile",
        "import-job",
        "batch",
        "pipeline-version",
    }
)
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")


class TagRuleError(ValueError):
    """A rule that cannot be applied (unknown source, key HealthImaging refuses)."""


@dataclass(frozen=True, slots=True)
class TagRule:
    key: str
    source: str

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key) or len(self.key) > MAX_KEY:
            raise TagRuleError(f"tag key {self.key!r} is not one HealthImaging accepts")
        if self.source not in _SOURCES and not (
            self.source.startswith("attribute:")
            and _KEYWORD.fullmatch(self.source.removeprefix("attribute:"))
        ):
            raise TagRuleError(f"unknown tag source {self.source!r}")


DEFAULT_RULES: Final = (
    TagRule("pipeline:modality", "attribute:Modality"),
    TagRule("pipeline:body-part", "attribute:BodyPartExamined"),
    TagRule("pipeline:sop-class", "sop-class"),
    TagRule("pipeline:instances", "instances"),
    TagRule("pipeline:frames", "frames"),
    TagRule("pipeline:deidentification", "deidentification:status"),
    TagRule("pipeline:deidentification-profile", "deidentification:profile"),
    TagRule("pipeline:import-job", "import-job"),
    TagRule("pipeline:batch", "batch"),
    TagRule("pipeline:version", "pipeline-version"),
)


def parse_rules(text: str) -> tuple[TagRule, ...]:
    """The deployment's rules: ``key=Keyword`` pairs separated by ``;`` (``site:protocol=ProtocolName``).

    Raises
    ------
    TagRuleError
        For a malformed pair, an unusable key or a keyword that is not an attribute keyword.
    """
    rules = []
    for raw in (part.strip() for part in text.split(";")):
        if not raw:
            continue
        key, sep, keyword = raw.rpartition("=")
        if not sep or not key.strip() or not _KEYWORD.fullmatch(keyword.strip()):
            raise TagRuleError(f"tag rule {raw!r} is not key=Keyword")
        if not _known_keyword(keyword.strip()):
            raise TagRuleError(f"tag rule {raw!r}: {keyword.strip()!r} is not a DICOM attribute keyword")
        rules.append(TagRule(key.strip(), f"attribute:{keyword.strip()}"))
    return tuple(rules)


def _known_keyword(keyword: str) -> bool:
    from pydicom.datadict import tag_for_keyword  # noqa: PLC0415 - pydicom only when rules are read

    return tag_for_keyword(keyword) is not None


def normalize_key(key: str) -> str:
    return _KEY_OUT.sub("_", key)[:MAX_KEY]


def normalize_value(value: str) -> str:
    """A value in the characters AWS tags allow (letters, digits, spaces, ``_.:/=+-@``), ≤ 256 characters."""
    text = "".join(
        character
        if character in "_.:/=+-@ "
        or unicodedata.category(character)[0] in "LN"
        or unicodedata.category(character) == "Zs"
        else "_"
        for character in value.strip()
    )
    return " ".join(text.split())[:MAX_VALUE].rstrip()


def _levels(metadata: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The DICOM maps to look attributes up in: patient, study, each series, first instance of each."""
    found: list[Mapping[str, Any]] = []
    for holder in (metadata.get("Patient"), metadata.get("Study")):
        if isinstance(holder, Mapping) and isinstance(holder.get("DICOM"), Mapping):
            found.append(holder["DICOM"])
    for series in ((metadata.get("Study") or {}).get("Series") or {}).values():
        found.append(series.get("DICOM") or {})
        for instance in (series.get("Instances") or {}).values():
            found.append(instance.get("DICOM") or {})
            break
    return found


def _counts(metadata: Mapping[str, Any]) -> tuple[int, int]:
    instances = frames = 0
    for series in ((metadata.get("Study") or {}).get("Series") or {}).values():
        for instance in (series.get("Instances") or {}).values():
            instances += 1
            frames += len(instance.get("ImageFrames") or [])
    return instances, frames


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        items = [str(item) for item in value if item is not None and not isinstance(item, dict)]
        return "\\".join(items) if items else None
    if isinstance(value, dict):
        return None
    return str(value)


def _sop_class(levels: list[Mapping[str, Any]]) -> str | None:
    uid = next((level.get("SOPClassUID") for level in levels if level.get("SOPClassUID")), None)
    if not isinstance(uid, str):
        return None
    from pydicom.uid import UID  # noqa: PLC0415 - pydicom only when tagging

    keyword = UID(uid).keyword
    return keyword or uid


def computed_keys(rules: Iterable[TagRule]) -> frozenset[str]:
    """The keys of rules whose values the pipeline computes (no metadata value is copied into them)."""
    copied = {"attribute:", "sop-class"}
    return frozenset(r.key for r in rules if not any(r.source.startswith(c) for c in copied))


def compute_tags(
    metadata: Mapping[str, Any],
    detail: Mapping[str, Any],
    rules: Iterable[TagRule],
    *,
    version: str,
) -> dict[str, str]:
    """The tags the rules give (normalized; empty values left out), in rule order."""
    levels = _levels(metadata)
    instances, frames = _counts(metadata)
    deid = detail.get("deidentification") or {}
    profile = deid.get("edition"), "+".join(deid.get("options") or []) or "basic"
    sources: dict[str, str | None] = {
        "sop-class": _sop_class(levels),
        "instances": str(instances),
        "frames": str(frames),
        "deidentification:status": deid.get("status"),
        "deidentification:profile": f"PS3.15-{profile[0]}:{profile[1]}" if profile[0] else None,
        "import-job": detail.get("importJobId"),
        "batch": detail.get("batchId"),
        "pipeline-version": version,
    }
    tags: dict[str, str] = {}
    for rule in rules:
        if rule.source.startswith("attribute:"):
            keyword = rule.source.removeprefix("attribute:")
            raw = next((_text(level[keyword]) for level in levels if level.get(keyword) is not None), None)
        else:
            raw = sources.get(rule.source)
        value = normalize_value(raw) if raw else ""
        if value:
            tags[rule.key] = value
    return tags


def guard(
    tags: Mapping[str, str], identifiers: Iterable[str], *, computed: Iterable[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """The tags whose values hold no identifying value, and the keys of those dropped.

    ``computed`` names tags whose values the pipeline makes itself (counts, ids, status: no metadata
    value is copied into them), which are not checked: a count of "1" is no leak of a StudyID "1".

    An identifier of three characters or more is looked for inside every value (case-insensitive,
    normalized as tag values are); a shorter one only as the whole value.
    """
    # Both sides casefolded *before* normalizing: "İ" casefolds to "i" + a combining dot, which
    # normalizing turns into "_" the same way on both sides.
    folded = [f for f in (normalize_value(str(i).casefold()) for i in identifiers if i) if f]
    kept: dict[str, str] = {}
    dropped: list[str] = []
    exempt = set(computed)
    for key, value in tags.items():
        if key in exempt:
            kept[key] = value
            continue
        text = normalize_value(value.casefold())
        leak = any(i == text or (len(i) >= 3 and i in text) for i in folded)
        if leak:
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


@dataclass(frozen=True, slots=True)
class Merge:
    """What to send: ``to_set`` (new or changed tags), and the rules' tags left out for the limit."""

    to_set: dict[str, str]
    over_limit: list[str]


def merge(existing: Mapping[str, str], computed: Mapping[str, str], *, limit: int = MAX_TAGS) -> Merge:
    """Add or update the computed tags, never touching a tag someone else set, within ``limit`` tags.

    Tags already present count against the limit; computed tags that would exceed it are left out in
    reverse rule order (the defaults, first in order, are kept longest).
    """
    changed = {key: value for key, value in computed.items() if existing.get(key) != value}
    room = limit - len(existing)
    new_keys = [key for key in changed if key not in existing]
    over = new_keys[max(room, 0) :] if len(new_keys) > room else []
    to_set = {key: value for key, value in changed.items() if key not in over}
    return Merge(to_set, over)
