"""The retry policy as pure functions: the Standard Webhooks schedule with ±20 % jitter,
outcome classes, Retry-After in both forms and its cap, and the 5-day disable rule."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stablegate.config import Settings
from stablegate.webhooks import schedule

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def test_schedule_is_the_standard_webhooks_one() -> None:
    assert schedule.RETRY_DELAYS_S == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    mid = [schedule.next_delay_s(n, 500, None, lambda: 0.5) for n in range(1, 11)]
    assert mid == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400, None]
    # The spec's table: the last attempt 75 h 35 min 5 s after the first.
    assert sum(schedule.RETRY_DELAYS_S) == 75 * 3600 + 35 * 60 + 5


@given(attempts=st.integers(1, 9), r=st.floats(0, 1))
def test_jitter_stays_within_20_percent(attempts: int, r: float) -> None:
    delay_s = schedule.next_delay_s(attempts, None, None, lambda: r)
    base = schedule.RETRY_DELAYS_S[attempts]
    assert delay_s is not None and 0.8 * base <= delay_s <= 1.2 * base


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, schedule.Outcome.SUCCEEDED),
        (204, schedule.Outcome.SUCCEEDED),
        (299, schedule.Outcome.SUCCEEDED),
        (301, schedule.Outcome.RETRY),
        (302, schedule.Outcome.RETRY),
        (400, schedule.Outcome.RETRY),
        (404, schedule.Outcome.RETRY),
        (410, schedule.Outcome.GONE),
        (429, schedule.Outcome.RETRY),
        (500, schedule.Outcome.RETRY),
        (None, schedule.Outcome.RETRY),
    ],
)
def test_classify(status: int | None, outcome: schedule.Outcome) -> None:
    assert schedule.classify(status) is outcome


def test_retry_after_forms() -> None:
    assert schedule.parse_retry_after("120", NOW) == 120
    assert schedule.parse_retry_after(" 7 ", NOW) == 7
    assert schedule.parse_retry_after("Wed, 25 Nov 2026 12:01:30 GMT", NOW) == 90
    assert schedule.parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", NOW) == 0
    assert schedule.parse_retry_after("soon", NOW) is None
    assert schedule.parse_retry_after("-5", NOW) is None
    assert schedule.parse_retry_after(None, NOW) is None
    assert schedule.parse_retry_after("9" * 40, NOW) == 10**9
    # digits that are not RFC 9110 DIGITs, and dates beyond datetime's range: unreadable
    assert schedule.parse_retry_after("²", NOW) is None
    assert schedule.parse_retry_after("\u0663", NOW) is None  # ARABIC-INDIC DIGIT THREE
    assert schedule.parse_retry_after("Wed, 25 Nov 99999 12:01:30 GMT", NOW) is None


@given(st.text(max_size=40))
def test_any_retry_after_reads_as_seconds_or_none(value: str) -> None:
    """A receiver's header is untrusted input: never an exception, never negative."""
    seconds = schedule.parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0


def test_retry_after_is_honoured_for_429_and_5xx_only_and_capped() -> None:
    def no_jitter() -> float:
        return 0.5

    # After attempt 1 the schedule says 5 s; Retry-After 40 wins (cap: max(2 × 5, 60) s).
    assert schedule.next_delay_s(1, 429, 40, lambda: 0.0) == 40
    assert schedule.next_delay_s(1, 503, 40, lambda: 0.0) == 40
    assert schedule.next_delay_s(1, 429, 10_000, lambda: 0.0) == 60
    assert schedule.next_delay_s(3, 429, 10_000, lambda: 0.0) == 3600  # 2 × 30 min
    # Shorter than the schedule: the schedule stands. Other statuses ignore the header.
    assert schedule.next_delay_s(2, 429, 1, no_jitter) == 300
    assert schedule.next_delay_s(1, 400, 40, no_jitter) == 5
    # Never earlier than asked, whatever the jitter.
    for r in (0.0, 0.5, 1.0):
        delay_s = schedule.next_delay_s(1, 429, 40, lambda r=r: r)
        assert delay_s is not None and 40 <= delay_s <= 48
    # The last attempt has no successor, Retry-After or not.
    assert schedule.next_delay_s(10, 429, 40, no_jitter) is None


def test_disable_rule() -> None:
    five_days = dt.timedelta(days=5)
    assert not schedule.should_disable(None, NOW, 1.0)
    assert not schedule.should_disable(NOW - five_days + dt.timedelta(seconds=1), NOW, 1.0)
    assert schedule.should_disable(NOW - five_days, NOW, 1.0)
    assert schedule.should_disable(NOW - dt.timedelta(seconds=5), NOW, 0.00001)  # 4.32 s when compressed


def test_an_attempt_waits_15_s_by_default() -> None:
    """The spec recommends 15 to 30 s; tests shorten it, production keeps this default."""
    assert Settings.model_fields["webhook_timeout_s"].default == 15.0
