"""Cold-start caches: things made once per execution environment, and one switch to reset them in tests.

Lambda reuses an execution environment across invocations, so settings, clients and gateways are made
on first use and kept (never at import time: importing a handler does no I/O and makes no client).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["per_environment", "reset_environment"]

P = ParamSpec("P")
R = TypeVar("R")

_CACHES: list[Any] = []


def per_environment(function: Callable[P, R]) -> Callable[P, R]:
    """``functools.cache`` that :func:`reset_environment` clears (arguments must be hashable)."""
    cached = functools.cache(function)
    _CACHES.append(cached)
    return cached  # type: ignore[return-value]


def reset_environment() -> None:
    """Forget every cached setting, client and gateway, as a new execution environment would."""
    for cached in _CACHES:
        cached.cache_clear()
