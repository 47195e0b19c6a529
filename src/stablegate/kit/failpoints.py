"""Fault injection for crash tests: `hit("txmanager.after_sign")` kills this process with
SIGKILL when STABLEGATE_FAILPOINTS names that point (comma-separated). Unset — always in
production — it is one frozenset lookup.

A SIGKILL is the harshest crash a process can have (no handler, no flush, no finally), so
recovering from one at every step shows that nothing between two database commits holds
state that matters.
"""

from __future__ import annotations

import os
import signal

ENV = "STABLEGATE_FAILPOINTS"
_ACTIVE = frozenset(filter(None, (p.strip() for p in os.environ.get(ENV, "").split(","))))


def hit(name: str) -> None:
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
