"""Batching rules of StartImport (ahi_pipeline.batching): acceptance, limits, order, ids, staged keys."""

from __future__ import annotations

import posixpath
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ahi_pipeline.batching import (
    Limits,
    SkipReason,
    batch_id_of,
    plan_batches,
    sanitize_relative_key,
    skip_reason,
    staged_relative_keys,
)
from ahi_pipeline.settings import FILE_MAX_BYTES, JOB_MAX_BYTES, JOB_MAX_FILES
from ahi_pipeline.uploads import Upload

pytestmark = pytest.mark.unit

LIMITS = Limits("landing", "incoming/", JOB_MAX_FILES, JOB_MAX_BYTES)
CLIENT_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
SAFE_KEY = re.compile(r"[A-Za-z0-9!_.*'()/~-]+")


def upload(key: str, size: int = 100, *, version: str | None = None, etag: str = "e") -> Upload:
    return Upload("landing", f"incoming/{key}", size, etag=etag, version_id=version)


# -------------------------------------------------------------------------------- acceptance
@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (Upload("other", "incoming/a.dcm", 10, etag="e"), SkipReason.OTHER_BUCKET),
        (Upload("landing", "elsewhere/a.dcm", 10, etag="e"), SkipReason.OUTSIDE_PREFIX),
        (Upload("landing", "incoming", 10, etag="e"), SkipReason.OUTSIDE_PREFIX),
        (Upload("landing", "incoming/study/", 0, etag="e"), SkipReason.FOLDER_MARKER),
        (Upload("landing", "incoming/a.dcm", 0, etag="e"), SkipReason.EMPTY),
        (Upload("landing", "incoming/a.dcm", FILE_MAX_BYTES + 1, etag="e"), SkipReason.TOO_LARGE_FOR_SERVICE),
        (Upload("landing", "incoming/a.dcm", 10, etag="e"), None),
        (Upload("landing", "incoming/a.dcm", FILE_MAX_BYTES, etag="e"), None),
    ],
)
def test_skip_rules(candidate: Upload, reason: SkipReason | None) -> None:
    # Given an upload
    # When judged
    # Then it is accepted or skipped for the expected reason
    assert skip_reason(candidate, LIMITS) == reason


def test_a_file_larger_than_a_lowered_byte_limit_is_skipped() -> None:
    # Given a byte limit lowered below a file's size
    limits = Limits("landing", "incoming/", 10, 1000)

    # Then that file is skipped rather than never fitting a batch
    assert skip_reason(upload("big.dcm", 1001), limits) == SkipReason.TOO_LARGE_FOR_BATCH
    with pytest.raises(ValueError, match="larger than the batch byte limit"):
        plan_batches([upload("big.dcm", 1001)], limits)


# -------------------------------------------------------------------------------- limits
def test_6000_files_make_two_batches_of_5000_and_1000() -> None:
    # Given 6,000 small uploads and the service's limits
    uploads = [upload(f"s/{i:05d}.dcm") for i in range(6000)]

    # When planned
    batches = plan_batches(uploads, LIMITS)

    # Then two batches, the first full, in key order
    assert [b.files for b in batches] == [5000, 1000]
    assert batches[0].members[0].upload.key == "incoming/s/00000.dcm"
    assert batches[1].members[0].upload.key == "incoming/s/05000.dcm"


def test_lowered_file_limit() -> None:
    # Given MAX_FILES_PER_JOB lowered to 3
    limits = Limits("landing", "incoming/", 3, JOB_MAX_BYTES)

    # When 7 uploads are planned
    batches = plan_batches([upload(f"{i}.dcm") for i in range(7)], limits)

    # Then batches of 3, 3 and 1
    assert [b.files for b in batches] == [3, 3, 1]


def test_byte_limit_closes_a_batch_before_it_is_exceeded() -> None:
    # Given a 1,000-byte limit and files of 400 bytes
    limits = Limits("landing", "incoming/", 100, 1000)
    uploads = [upload(f"{i}.dcm", 400) for i in range(5)]

    # When planned
    batches = plan_batches(uploads, limits)

    # Then no batch exceeds the limit, and each is as full as it can be
    assert [b.bytes for b in batches] == [800, 800, 400]


def test_a_file_exactly_at_the_byte_limit_fills_a_batch_alone() -> None:
    limits = Limits("landing", "incoming/", 100, 1000)
    batches = plan_batches([upload("a.dcm", 1), upload("b.dcm", 1000), upload("c.dcm", 1)], limits)
    assert [[m.upload.key[-5:] for m in b.members] for b in batches] == [["a.dcm"], ["b.dcm"], ["c.dcm"]]


def test_ten_gib_of_large_files() -> None:
    # Given 4 GiB files (the largest an import accepts) against the 10 GiB job limit
    uploads = [upload(f"{i}.dcm", FILE_MAX_BYTES) for i in range(5)]

    # When planned
    batches = plan_batches(uploads, LIMITS)

    # Then two per batch (8 GiB), never three (12 GiB)
    assert [b.files for b in batches] == [2, 2, 1]
    assert all(b.bytes <= JOB_MAX_BYTES for b in batches)


# -------------------------------------------------------------------------------- ids
def test_batch_ids_are_valid_client_tokens_and_folder_names() -> None:
    batch = plan_batches([upload("a.dcm")], LIMITS)[0]
    assert CLIENT_TOKEN.fullmatch(batch.batch_id)
    assert len(batch.batch_id) == 40


def test_batch_id_depends_on_version_or_etag() -> None:
    # Given the same key at two versions, and unversioned with two ETags
    ids = {
        batch_id_of([upload("a.dcm", version="v1")]),
        batch_id_of([upload("a.dcm", version="v2")]),
        batch_id_of([upload("a.dcm", etag="x")]),
        batch_id_of([upload("a.dcm", etag="y")]),
    }
    # Then every revision is a different batch
    assert len(ids) == 4


uploads_strategy = st.lists(
    st.builds(
        upload,
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30),
        st.integers(1, 400),
        version=st.one_of(st.none(), st.sampled_from(["v1", "v2"])),
        etag=st.sampled_from(["e1", "e2"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(uploads=uploads_strategy, data=st.data())
def test_plans_are_stable_under_reordering_and_duplicates(uploads: list[Upload], data: st.DataObject) -> None:
    # Given a set of uploads, and the same uploads shuffled with some delivered twice
    limits = Limits("landing", "incoming/", 7, 1500)
    redelivered = data.draw(st.permutations(uploads + data.draw(st.lists(st.sampled_from(uploads)))))

    # When both are planned
    first = plan_batches(uploads, limits)
    second = plan_batches(redelivered, limits)

    # Then the batches, their ids and their staged keys are identical
    assert first == second
    # and every distinct upload is in exactly one batch, within the limits
    members = [m.upload.identity for b in first for m in b.members]
    assert sorted(members) == sorted({u.identity for u in uploads})
    assert all(b.files <= 7 and b.bytes <= 1500 for b in first)
    # and staged keys are unique and safe within each batch
    for batch in first:
        keys = [m.staged_relative_key for m in batch.members]
        assert len(set(keys)) == len(keys)
        assert all(SAFE_KEY.fullmatch(k) for k in keys)
        assert all(
            posixpath.normpath(f"staging/{batch.batch_id}/{k}").startswith(f"staging/{batch.batch_id}/")
            for k in keys
        )


# -------------------------------------------------------------------------------- staged keys
@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("study-1/series-2/IM0001.dcm", "study-1/series-2/IM0001.dcm"),
        ("a b/c.dcm", "a_b/c.dcm~"),
        ("Études/ü.dcm", "_tudes/_.dcm~"),
        ("../../etc/passwd", "_../_../etc/passwd~"),
        ("a/./b.dcm", "a/_./b.dcm~"),
        ("a//b.dcm", "a/_/b.dcm~"),
        ("/a.dcm", "_/a.dcm~"),
        ("x/..", "x/_..~"),
    ],
)
def test_sanitised_keys(relative: str, expected: str) -> None:
    # Given a key below incoming/
    # When sanitised
    result = sanitize_relative_key(relative)

    # Then safe keys are kept, others are cleaned and suffixed with a hash of the original
    if expected.endswith("~"):
        assert result.startswith(expected)
        assert re.fullmatch(r"[0-9a-f]{12}", result.removeprefix(expected))
    else:
        assert result == expected


def test_dot_dot_never_escapes_the_batch_folder() -> None:
    # Given keys made of parent references
    for relative in ("..", "../..", "a/../../b", "../incoming/x", "..\\..\\x", "./.."):
        staged = f"staging/BATCH/{sanitize_relative_key(relative)}"

        # Then no segment is "." or "..", and normalising the path stays inside the folder
        assert not {".", ".."} & set(staged.split("/"))
        assert posixpath.normpath(staged).startswith("staging/BATCH/")


def test_distinct_keys_that_sanitise_alike_stay_distinct() -> None:
    # Given keys that differ only in characters that are replaced
    keys = ["a b.dcm", "a_b.dcm", "a+b.dcm", "a\tb.dcm"]

    # Then their staged keys differ
    assert len({sanitize_relative_key(k) for k in keys}) == 4


def test_two_versions_of_one_key_in_one_batch_get_distinct_staged_keys() -> None:
    # Given two versions of the same key
    uploads = [upload("a.dcm", version="v1"), upload("a.dcm", version="v2")]

    # When their staged keys are computed
    keys = staged_relative_keys(uploads, "incoming/")

    # Then the first keeps the key and the second gets its object id appended
    assert keys[0] == "a.dcm"
    assert keys[1] == f"a.dcm~{uploads[1].object_id[:12]}"


def test_very_long_keys_fit_s3s_limit() -> None:
    # Given a 1,000-byte key of non-ASCII segments
    relative = "/".join(["é" * 100] * 5)

    # When sanitised for a batch folder
    limits = Limits("landing", "incoming/", 10, 1000)
    result = sanitize_relative_key(relative, limits.key_budget)

    # Then the staged key fits in S3's 1,024 bytes with room for a suffix
    staged = f"staging/{'0' * 40}/{result}~{'0' * 12}"
    assert len(staged.encode()) <= 1024
    assert SAFE_KEY.fullmatch(result)
