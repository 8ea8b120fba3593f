"""The one backoff the package's own retries use (botocore's retry modes cover the SDK calls)."""

from __future__ import annotations

import random

__all__ = ["equal_jitter"]


def equal_jitter(attempt: int, base: float, maximum: float) -> float:
    """Exponential backoff with "equal jitter": uniform in [c/2, c] where c = min(maximum, base·2^(n-1)).

    ``attempt`` counts from 1.  Half the delay is guaranteed, so retries never bunch up at zero.
    """
    ceiling: float = min(maximum, base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
