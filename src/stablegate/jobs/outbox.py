"""Enqueue a procrastinate job on the caller's own connection.

The job row is written by procrastinate's versioned SQL function in the same transaction
as the domain write that causes it: commit both or neither (design 0001).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import structlog
from procrastinate.tasks import Task
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.observability import metrics

log = structlog.get_logger(__name__)

MAX_ARGS_BYTES = 64 * 1024

_DEFER_SQL = text(
    "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW("
    " :queue, :task_name, :priority, :lock, :queueing_lock, CAST(:args AS jsonb), :scheduled_at"
    ")::procrastinate_job_to_defer_v1])) AS id"
)


async def enqueue(
    session: AsyncSession,
    task: Task[Any, Any, Any],
    *,
    lock: str | None = None,
    queueing_lock: str | None = None,
    scheduled_at: dt.datetime | None = None,
    priority: int = 0,
    **task_kwargs: Any,
) -> int:
    """Defer `task(**task_kwargs)`; visible to workers only once the caller commits."""
    args = json.dumps(task_kwargs, separators=(",", ":"))
    assert len(args) <= MAX_ARGS_BYTES, "job arguments carry ids, not payloads"
    job_id = await session.scalar(
        _DEFER_SQL,
        {
            "queue": task.queue,
            "task_name": task.name,
            "priority": priority,
            "lock": lock,
            "queueing_lock": queueing_lock,
            "args": args,
            "scheduled_at": scheduled_at,
        },
    )
    assert isinstance(job_id, int)
    metrics.JOBS_ENQUEUED.labels(task.name).inc()
    log.info("job.enqueued", task=task.name, job_id=job_id)
    return job_id
