"""Request admission: per-operation token buckets and injected faults.

The service throttles every action at a documented rate and burst and answers ``ThrottlingException``
beyond it (``../shared/spec/healthimaging-platform.md`` section 7.3).  :class:`RequestGate` reproduces
that when asked to (it is off by default, so ordinary tests never wait), with a ``time_scale`` that
makes time pass faster so a test reaches the limit and the recovery within milliseconds.  It also
injects faults at given probabilities, to exercise the retry paths of callers.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

from emulator.exceptions import ERRORS_BY_CODE, ThrottlingException

__all__ = ["RATES", "WILDCARD", "RequestGate", "parse_fault_spec"]

logger = logging.getLogger(__name__)

#: Operation name -> (rate in transactions per second, burst), from platform spec 7.3 (002:18717-18754).
#: Every operation of botocore's ``medical-imaging`` model, plus the DICOMweb ``GetDICOMInstance``.
RATES: Final[Mapping[str, tuple[float, float]]] = {
    "CreateDatastore": (0.085, 1),
    "GetDatastore": (10, 20),
    "ListDatastores": (5, 10),
    "DeleteDatastore": (0.085, 1),
    "StartDICOMImportJob": (0.25, 1),
    "GetDICOMImportJob": (25, 50),
    "ListDICOMImportJobs": (10, 20),
    "SearchImageSets": (25, 50),
    "GetImageSet": (25, 50),
    "GetImageSetMetadata": (50, 100),
    "GetImageFrame": (1000, 2000),
    "GetDICOMInstance": (50, 100),
    "ListImageSetVersions": (25, 50),
    "UpdateImageSetMetadata": (0.25, 1),
    "CopyImageSet": (0.25, 1),
    "DeleteImageSet": (0.25, 1),
    "TagResource": (10, 20),
    "ListTagsForResource": (10, 20),
    "UntagResource": (10, 20),
}

#: The operation key in a fault specification that applies to every operation.
WILDCARD: Final = "*"

_THROTTLED_MESSAGE: Final = "Rate exceeded"


class _TokenBucket:
    """A bucket of ``burst`` tokens refilled at ``rate`` tokens per (scaled) second; starts full."""

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(burst, 1.0)
        self._tokens = self._capacity
        self._stamp = now

    def take(self, now: float) -> bool:
        elapsed = max(now - self._stamp, 0.0)
        self._stamp = now
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _validated_faults(fault_rates: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    faults: dict[str, dict[str, float]] = {}
    for operation, rates in fault_rates.items():
        if operation != WILDCARD and operation not in RATES:
            raise ValueError(f"unknown operation {operation!r} in fault rates")
        for code, probability in rates.items():
            if code not in ERRORS_BY_CODE:
                raise ValueError(
                    f"unknown error code {code!r} for {operation}; known: {', '.join(ERRORS_BY_CODE)}"
                )
            if not 0.0 <= probability <= 1.0:
                raise ValueError(
                    f"probability of {code} for {operation} must be within [0, 1]; got {probability}"
                )
        faults[operation] = dict(rates)
    for operation in {*faults, *RATES}:
        total = sum({**faults.get(WILDCARD, {}), **faults.get(operation, {})}.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities for {operation} add up to {total:g}, more than 1")
    return faults


class RequestGate:
    """Decides whether a request goes through: throttling first, then fault injection.

    Parameters
    ----------
    throttling
        Enforce the :data:`RATES` token buckets.  Off by default.
    time_scale
        How much faster than the clock the buckets refill: with 100, a 0.25 TPS bucket gains a token
        every 40 ms.
    fault_rates
        ``{operation or "*": {error code: probability}}``, e.g. ``{"StartDICOMImportJob":
        {"ThrottlingException": 0.2}, "*": {"InternalServerException": 0.01}}``.  An operation's own
        entry overrides the ``"*"`` entry for the same code; the probabilities of one operation may add
        up to at most 1.  Error codes are those of :mod:`emulator.exceptions`.
    seed
        Seed of the fault-injection random generator, for reproducible runs.
    clock
        Monotonic seconds; tests pass a fake one.

    Raises
    ------
    ValueError
        For a non-positive ``time_scale``, an unknown operation or error code, or probabilities out of range.
    """

    def __init__(
        self,
        *,
        throttling: bool = False,
        time_scale: float = 1.0,
        fault_rates: Mapping[str, Mapping[str, float]] | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive; got {time_scale}")
        self.throttling = throttling
        self._time_scale = time_scale
        self._faults = _validated_faults(fault_rates or {})
        self._random = random.Random(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _TokenBucket] = {}

    @property
    def time_scale(self) -> float:
        """How much faster than the clock the buckets refill (fixed at construction)."""
        return self._time_scale

    @property
    def fault_rates(self) -> dict[str, dict[str, float]]:
        """A copy of the configured fault probabilities."""
        return {operation: dict(rates) for operation, rates in self._faults.items()}

    def reset(self) -> None:
        """Refill every bucket (test reset hook); the random generator keeps its state."""
        with self._lock:
            self._buckets.clear()

    def admit(self, operation: str) -> None:
        """Let one request of ``operation`` through, or raise the error the service would return.

        Operations without a row in :data:`RATES` are never throttled (but still get ``"*"`` faults).

        Raises
        ------
        ThrottlingException
            ``"Rate exceeded"`` when throttling is on and the operation's bucket is empty; also when
            injected.
        ServiceError
            Any other injected fault (``InternalServerException``, ...), with a message naming the
            operation.
        """
        with self._lock:
            if self.throttling and not self._take_token(operation):
                logger.debug("throttled %s", operation)
                raise ThrottlingException(_THROTTLED_MESSAGE)
            code = self._draw_fault(operation)
        if code is None:
            return
        logger.debug("injecting %s into %s", code, operation)
        if code == ThrottlingException.code:
            raise ThrottlingException(_THROTTLED_MESSAGE)
        raise ERRORS_BY_CODE[code](f"Injected fault: {code} for {operation}.")

    def _take_token(self, operation: str) -> bool:
        rate = RATES.get(operation)
        if rate is None:
            return True
        now = self._clock() * self._time_scale
        bucket = self._buckets.get(operation)
        if bucket is None:
            bucket = self._buckets[operation] = _TokenBucket(rate[0], rate[1], now)
        return bucket.take(now)

    def _draw_fault(self, operation: str) -> str | None:
        rates = {**self._faults.get(WILDCARD, {}), **self._faults.get(operation, {})}
        if not rates:
            return None
        draw = self._random.random()
        cumulative = 0.0
        for code, probability in rates.items():
            cumulative += probability
            if draw < cumulative:
                return code
        return None


def parse_fault_spec(text: str) -> dict[str, dict[str, float]]:
    """Parse a command-line fault specification.

    Parameters
    ----------
    text
        Comma-separated ``Operation:ErrorCode=probability`` items; ``*`` as the operation means every
        operation, e.g. ``"StartDICOMImportJob:ThrottlingException=0.2,*:InternalServerException=0.01"``.
        Blank text means no faults.

    Returns
    -------
    dict
        ``{operation: {error code: probability}}``, ready for :class:`RequestGate`.

    Raises
    ------
    ValueError
        For a malformed item, an unknown operation or error code, or a probability outside [0, 1].
    """
    faults: dict[str, dict[str, float]] = {}
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        operation, colon, assignment = item.partition(":")
        code, equals, number = assignment.partition("=")
        operation, code, number = operation.strip(), code.strip(), number.strip()
        if not (colon and equals and operation and code and number):
            raise ValueError(f"fault item {item!r} is not of the form Operation:ErrorCode=probability")
        try:
            probability = float(number)
        except ValueError:
            raise ValueError(f"probability {number!r} in fault item {item!r} is not a number") from None
        faults.setdefault(operation, {})[code] = probability
    return _validated_faults(faults)
