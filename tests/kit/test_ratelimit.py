from __future__ import annotations

import pytest

from stablegate.errors import RateLimited
from stablegate.kit.ratelimit import RateLimiter


def test_burst_then_steady_rate() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=5)
    for _ in range(5):
        limiter.check("k", now_s=100.0)
    with pytest.raises(RateLimited) as err:
        limiter.check("k", now_s=100.0)
    assert err.value.headers["Retry-After"] == "1"
    limiter.check("k", now_s=100.11)  # one token back after 1/rate seconds
    limiter.check("other", now_s=100.0)  # buckets are per key


def test_retry_after_rounds_up_for_slow_rates() -> None:
    limiter = RateLimiter(rate_per_s=0.2, burst=1)
    limiter.check("k", now_s=0.0)
    with pytest.raises(RateLimited) as err:
        limiter.check("k", now_s=0.5)
    assert err.value.headers["Retry-After"] == "5"
