"""Webhook background work in the worker process. Deliveries are not procrastinate jobs:
`run_worker` runs the dispatcher (dispatch.py) beside procrastinate's worker whenever it
serves this queue name (design 0005, "Dispatch")."""

from __future__ import annotations

QUEUE = "webhooks"


def serves_webhooks(queues: list[str] | None) -> bool:
    """Whether a worker given these queues (None: all) delivers webhooks."""
    return queues is None or QUEUE in queues
