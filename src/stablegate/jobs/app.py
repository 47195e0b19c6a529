"""The procrastinate app: task registry, periodic system jobs, and the worker entry point."""

from __future__ import annotations

import asyncio
from typing import Any

import procrastinate
import structlog

from stablegate.config import Settings
from stablegate.db import Database, with_driver
from stablegate.jobs.runtime import Runtime, drain
from stablegate.kit import idempotency
from stablegate.ledger import jobs as ledger_jobs
from stablegate.observability import metrics
from stablegate.payments import jobs as payments_jobs
from stablegate.settlement import jobs as settlement_jobs
from stablegate.settlement import sweep_jobs
from stablegate.webhooks import dispatch
from stablegate.webhooks import jobs as webhook_jobs

log = structlog.get_logger(__name__)

tasks = procrastinate.Blueprint()
PURGE_MAX_BATCHES = 100
STALLED_AFTER_S = 60  # procrastinate's workers beat every 10 s


@tasks.periodic(cron="*/15 * * * *", periodic_id="purge_idempotency_keys")
@tasks.task(name="system.purge_idempotency_keys", queue="system", pass_context=False)
async def purge_idempotency_keys(timestamp: int) -> int:
    """Delete expired idempotency keys in bounded batches (24 h retention)."""
    deleted = await drain(idempotency.purge_expired, idempotency.PURGE_BATCH_SIZE, PURGE_MAX_BATCHES)
    log.info("idempotency.purged", deleted=deleted)
    metrics.JOBS_RUN.labels("system.purge_idempotency_keys", "ok").inc()
    return deleted


@tasks.periodic(cron="* * * * *", periodic_id="retry_stalled_jobs")
@tasks.task(name="system.retry_stalled_jobs", queue="system", pass_context=True)
async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> int:
    """Put back jobs whose worker died mid-run (no heartbeat for STALLED_AFTER_S): without
    this such a job would stay `doing` forever. Every task is safe to run again. (Webhook
    deliveries are not jobs: their leases expire instead, design 0005.)"""
    assert context.app is not None
    retried = await retry_stalled(context.app)
    metrics.JOBS_RUN.labels("system.retry_stalled_jobs", "ok").inc()
    return retried


async def retry_stalled(app: procrastinate.App) -> int:
    manager = app.job_manager
    stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER_S))
    for job in stalled:
        await manager.retry_job(job)
        log.warning("job.stalled_retried", job_id=job.id, task=job.task_name, lock=job.lock)
    return len(stalled)


def build_app(url: str) -> procrastinate.App:
    connector = procrastinate.PsycopgConnector(conninfo=with_driver(url, ""))
    app = procrastinate.App(connector=connector)
    app.add_tasks_from(tasks, namespace="")
    app.add_tasks_from(ledger_jobs.tasks, namespace="")
    app.add_tasks_from(payments_jobs.tasks, namespace="")
    app.add_tasks_from(sweep_jobs.tasks, namespace="")
    app.add_tasks_from(settlement_jobs.tasks, namespace="")
    return app


async def run_worker(url: str, settings: Settings, *, concurrency: int = 4, wait: bool = True, **kwargs: Any) -> None:
    """procrastinate's worker and, when it serves the webhooks queue, the webhook
    dispatcher beside it (design 0005). wait=False: both stop once nothing is due. A
    caller that stops it by cancelling uses kit.tasks.cancel_and_wait: one cancel can be
    lost while the pool opens."""
    Runtime.db = Database.connect(url, settings)
    app = build_app(url)
    try:
        # Opened and closed by hand, not `async with`: a cancel while the pool opens skips
        # a context manager's exit and would leave the pool's connections open.
        await app.open_async()
        async with asyncio.TaskGroup() as group:
            log.info("worker.started", concurrency=concurrency)
            group.create_task(app.run_worker_async(concurrency=concurrency, wait=wait, **kwargs))
            if webhook_jobs.serves_webhooks(kwargs.get("queues")):
                poll_s = kwargs.get("fetch_job_polling_interval", dispatch.POLL_INTERVAL_S)
                dispatcher = dispatch.Dispatcher(
                    Runtime.database(), settings, concurrency=concurrency, poll_interval_s=poll_s
                )
                group.create_task(dispatcher.run(wait=wait))
    finally:
        await app.close_async()
        await Runtime.database().dispose()
        Runtime.db = None


def run_worker_blocking(url: str, settings: Settings, concurrency: int = 4) -> None:
    asyncio.run(run_worker(url, settings, concurrency=concurrency))
