"""EventBridge schedule expressions: ``rate(…)``, ``cron(…)`` and (Scheduler) ``at(…)``, parsed (pure).

Cron follows EventBridge's six fields ``Minutes Hours Day-of-month Month Day-of-week Year``, all in UTC,
with ``*``, ``?``, lists, ranges, increments and month/day names; day-of-week 1-7 is SUN-SAT and one of
the two day fields must be ``?``.  The ``L``, ``W`` and ``#`` forms are refused with a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from local.template import TemplateError

__all__ = ["At", "Cron", "Rate", "Schedule", "parse_schedule"]

_RATE: Final = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS: Final = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS: Final = {
    name: index
    for index, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
_DAYS: Final = {
    name: index for index, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)
}
_SEARCH_DAYS: Final = 366 * 5


@dataclass(frozen=True)
class Rate:
    """``rate(N unit)``: every ``seconds``, the first one period after the rule is created."""

    seconds: int

    def next_after(self, moment: datetime) -> datetime:
        return moment + timedelta(seconds=self.seconds)


@dataclass(frozen=True)
class At:
    """``at(yyyy-mm-ddThh:mm:ss)``: once (EventBridge Scheduler)."""

    moment: datetime

    def next_after(self, moment: datetime) -> datetime | None:
        return self.moment if self.moment > moment else None


@dataclass(frozen=True)
class Cron:
    """``cron(…)``; ``None`` day sets mean ``?``."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None
    months: frozenset[int]
    days_of_week: frozenset[int] | None
    years: frozenset[int]

    def matches_day(self, day: datetime) -> bool:
        aws_weekday = (day.weekday() + 1) % 7 + 1
        return (
            day.year in self.years
            and day.month in self.months
            and (self.days_of_month is None or day.day in self.days_of_month)
            and (self.days_of_week is None or aws_weekday in self.days_of_week)
        )

    def next_after(self, moment: datetime) -> datetime | None:
        """The first firing strictly after ``moment`` (UTC), or None within five years."""
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(_SEARCH_DAYS):
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        return None


Schedule = Rate | Cron | At


def parse_schedule(expression: str) -> Schedule:
    """A schedule from its expression; :class:`TemplateError` when it is not one EventBridge accepts."""
    text = expression.strip()
    if text.startswith("rate("):
        match = _RATE.fullmatch(text)
        if not match:
            raise TemplateError(f"{expression!r}: expected rate(<value> <minute(s)|hour(s)|day(s)>)")
        value, unit = int(match.group(1)), match.group(2)
        if value < 1 or (value == 1) != (not unit.endswith("s")):
            raise TemplateError(f"{expression!r}: use a singular unit for 1 and plural otherwise, value ≥ 1")
        return Rate(value * _UNIT_SECONDS[unit.rstrip("s")])
    if text.startswith("at(") and text.endswith(")"):
        try:
            return At(datetime.fromisoformat(text[3:-1]).replace(tzinfo=UTC))
        except ValueError:
            raise TemplateError(f"{expression!r}: expected at(yyyy-mm-ddThh:mm:ss)") from None
    if text.startswith("cron(") and text.endswith(")"):
        return _parse_cron(expression, text[5:-1].split())
    raise TemplateError(f"{expression!r}: expected rate(…), cron(…) or at(…)")


def _parse_cron(expression: str, fields: list[str]) -> Cron:
    if len(fields) != 6:
        raise TemplateError(f"{expression!r}: cron takes six fields (minutes hours day month weekday year)")
    minutes, hours, dom, months, dow, years = fields
    if (dom == "?") == (dow == "?"):
        raise TemplateError(f"{expression!r}: exactly one of day-of-month and day-of-week must be '?'")
    return Cron(
        minutes=_field(expression, minutes, 0, 59),
        hours=_field(expression, hours, 0, 23),
        days_of_month=None if dom == "?" else _field(expression, dom, 1, 31),
        months=_field(expression, months, 1, 12, _MONTHS),
        days_of_week=None if dow == "?" else _field(expression, dow, 1, 7, _DAYS),
        years=_field(expression, years, 1970, 2199),
    )


def _field(
    expression: str, text: str, low: int, high: int, names: dict[str, int] | None = None
) -> frozenset[int]:
    if any(mark in text.upper() for mark in ("L", "W", "#")) and not (names and _only_names(text, names)):
        raise TemplateError(f"{expression!r}: the L, W and # forms are not supported locally")
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = _number(expression, step_text, names) if step_text else 1
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(expression, first, names), _number(expression, last, names)
        else:
            start = _number(expression, base, names)
            end = high if step_text else start
        if not low <= start <= high or not low <= end <= high or step < 1:
            raise TemplateError(f"{expression!r}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _only_names(text: str, names: dict[str, int]) -> bool:
    words = re.findall(r"[A-Za-z]+", text)
    return all(word.upper() in names for word in words)


def _number(expression: str, text: str, names: dict[str, int] | None) -> int:
    if names and text.upper() in names:
        return names[text.upper()]
    try:
        return int(text)
    except ValueError:
        raise TemplateError(f"{expression!r}: {text!r} is not a number") from None
