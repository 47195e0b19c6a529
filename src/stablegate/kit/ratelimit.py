"""Per-key rate limiting: a GCRA token bucket held in this process.

Approximate by design (see design 0001): with N API processes the effective limit is N×.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from stablegate.errors import RateLimited

MAX_TRACKED_KEYS = 100_000


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        assert rate_per_s > 0 and burst >= 1
        self.interval_s = 1.0 / rate_per_s
        self.tolerance_s = self.interval_s * (burst - 1)
        # key -> theoretical arrival time; oldest keys evicted to bound memory.
        self._tat: OrderedDict[str, float] = OrderedDict()

    def check(self, key: str, now_s: float | None = None) -> None:
        now = time.monotonic() if now_s is None else now_s
        tat = max(self._tat.get(key, now), now)
        allow_at = tat - self.tolerance_s
        if allow_at > now:
            retry_after_s = max(1, math.ceil(allow_at - now))
            raise RateLimited(
                "Too many requests for this API key; slow down and retry.",
                headers={"Retry-After": str(retry_after_s)},
            )
        self._tat[key] = tat + self.interval_s
        self._tat.move_to_end(key)
        if len(self._tat) > MAX_TRACKED_KEYS:
            self._tat.popitem(last=False)
