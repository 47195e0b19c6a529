"""Ledger background work: expire timed-out pending transfers."""

from __future__ import annotations

import procrastinate
import structlog

from stablegate.jobs.runtime import drain
from stablegate.ledger import service
from stablegate.observability import metrics

log = structlog.get_logger(__name__)
tasks = procrastinate.Blueprint()
EXPIRE_BATCH = 500
EXPIRE_MAX_BATCHES = 20


@tasks.periodic(cron="* * * * *", periodic_id="ledger_expire_pending")
@tasks.task(name="ledger.expire_pending", queue="system", pass_context=False)
async def expire_pending(timestamp: int) -> int:
    """Resolve timed-out pending transfers as `expire` (exactly once: unique pending_id)."""
    expired = await drain(lambda s: service.expire_pending(s, EXPIRE_BATCH), EXPIRE_BATCH, EXPIRE_MAX_BATCHES)
    log.info("ledger.expired", count=expired)
    metrics.JOBS_RUN.labels("ledger.expire_pending", "ok").inc()
    return expired
