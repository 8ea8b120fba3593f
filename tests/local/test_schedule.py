"""EventBridge schedule expressions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from local.schedule import At, Cron, Rate, parse_schedule
from local.template import TemplateError

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 14, 10, 17, 30, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600), ("rate(2 days)", 172800)],
)
def test_rates(expression: str, seconds: int) -> None:
    schedule = parse_schedule(expression)
    assert schedule == Rate(seconds)
    assert (schedule.next_after(T0) - T0).total_seconds() == seconds


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("cron(0/15 * * * ? *)", datetime(2025, 3, 14, 10, 30, tzinfo=UTC)),
        ("cron(0 2 * * ? *)", datetime(2025, 3, 15, 2, 0, tzinfo=UTC)),
        ("cron(15 10 ? * MON-FRI *)", datetime(2025, 3, 17, 10, 15, tzinfo=UTC)),
        ("cron(0 12 1 JAN,JUL ? *)", datetime(2025, 7, 1, 12, 0, tzinfo=UTC)),
        ("cron(30 9 ? * 1 *)", datetime(2025, 3, 16, 9, 30, tzinfo=UTC)),  # 1 is Sunday
        ("cron(18 10 14 3 ? 2025)", datetime(2025, 3, 14, 10, 18, tzinfo=UTC)),
    ],
)
def test_cron_next_firing(expression: str, expected: datetime) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, Cron)
    assert schedule.next_after(T0) == expected


def test_cron_that_never_fires_again() -> None:
    schedule = parse_schedule("cron(0 0 1 1 ? 2020)")
    assert schedule.next_after(T0) is None


def test_at_fires_once() -> None:
    schedule = parse_schedule("at(2025-03-14T11:00:00)")
    assert schedule == At(datetime(2025, 3, 14, 11, tzinfo=UTC))
    assert schedule.next_after(T0) == datetime(2025, 3, 14, 11, tzinfo=UTC)
    assert schedule.next_after(datetime(2025, 3, 14, 12, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(1 minutes)", "singular unit"),
        ("rate(5 minute)", "singular unit"),
        ("rate(0 minutes)", "singular unit"),
        ("rate(5 weeks)", "expected rate"),
        ("cron(0 2 * * *)", "six fields"),
        ("cron(0 2 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 2 L * ? *)", "L, W and # forms"),
        ("cron(0 25 * * ? *)", "outside 0-23"),
        ("every day", "expected rate"),
    ],
)
def test_invalid_expressions_are_refused(expression: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_schedule(expression)
