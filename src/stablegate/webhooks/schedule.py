"""When to try a delivery again: the Standard Webhooks schedule, outcome classes and
Retry-After. Pure functions of (step, response, clock, random), so tests call them directly.

Delays are in real seconds; the caller multiplies by `webhook_schedule_scale` (1 in
production; tests compress time, Retry-After and the disable rule included).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import enum
import random
from collections.abc import Callable

# Delay before attempt n+1 (index n) after attempt n failed; the first attempt is
# immediate. The spec's example schedule: ten attempts in all, the last ~75.5 h after
# the first (the "multiple days" the spec recommends).
RETRY_DELAYS_S: tuple[int, ...] = (
    0,
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
)
MAX_ATTEMPTS = len(RETRY_DELAYS_S)
JITTER = 0.2  # ±20 %: spreads a burst of failures so retries do not arrive as one wave
# A Retry-After may push an attempt later than the schedule, but not beyond twice the
# scheduled delay (at least a minute): a receiver cannot park deliveries for days.
RETRY_AFTER_FLOOR_CAP_S = 60.0
# An endpoint whose every attempt failed for this long is disabled (with an event).
DISABLE_AFTER_FAILING_S = 5 * 24 * 3600


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"  # 2xx
    GONE = "gone"  # 410: the receiver says the endpoint no longer exists: disable it
    RETRY = "retry"  # anything else: 3xx (never followed), 4xx, 5xx, no response


def classify(status_code: int | None) -> Outcome:
    if status_code is not None and 200 <= status_code < 300:
        return Outcome.SUCCEEDED
    if status_code == 410:
        return Outcome.GONE
    return Outcome.RETRY


def honours_retry_after(status_code: int | None) -> bool:
    return status_code is not None and (status_code == 429 or 500 <= status_code < 600)


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110).
    None when absent or unreadable (then the schedule alone decides)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # RFC 9110's DIGIT; str.isdigit also takes "²"
        return float(min(int(value[:12]), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay_s(
    attempts_made: int,
    status_code: int | None,
    retry_after_s: float | None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """The delay before the next automatic attempt after `attempts_made` (≥ 1) attempts,
    the last of which failed with `status_code` (None: no response); None: give up."""
    assert attempts_made >= 1
    if attempts_made >= MAX_ATTEMPTS:
        return None
    scheduled_s = RETRY_DELAYS_S[attempts_made]
    delay_s = scheduled_s * (1 + JITTER * (2 * rand() - 1))
    if retry_after_s is not None and honours_retry_after(status_code):
        cap_s = max(2.0 * scheduled_s, RETRY_AFTER_FLOOR_CAP_S)
        # Never earlier than asked: only positive jitter on top of the receiver's delay.
        delay_s = max(delay_s, min(retry_after_s, cap_s) * (1 + JITTER * rand()))
    return delay_s


def should_disable(failing_since: dt.datetime | None, now: dt.datetime, scale: float) -> bool:
    """True once an endpoint has failed every attempt for DISABLE_AFTER_FAILING_S."""
    return failing_since is not None and (now - failing_since).total_seconds() >= DISABLE_AFTER_FAILING_S * scale
