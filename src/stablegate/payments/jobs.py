"""Payments background work: expire open payments nobody paid in time."""

from __future__ import annotations

import procrastinate
import structlog

from stablegate.jobs.runtime import drain
from stablegate.observability import metrics
from stablegate.payments import service

log = structlog.get_logger(__name__)
tasks = procrastinate.Blueprint()
EXPIRE_MAX_BATCHES = 50


@tasks.periodic(cron="* * * * *", periodic_id="payments_expire")
@tasks.task(name="payments.expire", queue="system", pass_context=False)
async def expire(timestamp: int) -> int:
    """Expire payments past their expiry that saw no money (each with its event)."""
    expired = await drain(service.expire_due, service.EXPIRE_BATCH, EXPIRE_MAX_BATCHES)
    if expired:
        log.info("payments.expired", count=expired)
    metrics.PAYMENTS_EXPIRED.inc(expired)
    metrics.JOBS_RUN.labels("payments.expire", "ok").inc()
    return expired
