"""Sweep background work (design 0006): every ten minutes, plan batch sweeps of the deposit
addresses holding confirmed payments on every configured chain. Planning only writes
rows (sweeps and their transaction intents); the sender process signs and sends them."""

from __future__ import annotations

import procrastinate
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains import registry
from stablegate.chains.registry import ChainConfig
from stablegate.config import get_settings
from stablegate.jobs.runtime import Runtime
from stablegate.observability import metrics
from stablegate.settlement import sweeps

log = structlog.get_logger(__name__)
tasks = procrastinate.Blueprint()


@tasks.periodic(cron="*/10 * * * *", periodic_id="settlement_sweep")
@tasks.task(name="settlement.sweep", queue="system", pass_context=False)
async def sweep(timestamp: int) -> int:
    """Plan the sweeps due on every configured chain; how many were planned. One chain's
    failure does not keep the others from being swept."""
    fail_unsigned_after_s = get_settings().tx_fail_unsigned_after_s
    planned, failed = 0, 0
    for chain in registry.configured():
        try:
            planned += await plan_chain(chain, fail_unsigned_after_s)
        except Exception:  # logged with its stack; the next run tries again
            failed += 1
            log.exception("sweep.plan_failed", chain=chain.name)
    metrics.JOBS_RUN.labels("settlement.sweep", "error" if failed else "ok").inc()
    return planned


async def plan_chain(chain: ChainConfig, fail_unsigned_after_s: int) -> int:
    """One chain's sweeps in one (retried) transaction."""

    async def step(session: AsyncSession) -> int:
        return len(await sweeps.plan_sweeps(session, chain, fail_unsigned_after_s))

    planned = await Runtime.database().retrying(step)
    if planned:
        log.info("sweep.run", chain=chain.name, sweeps=planned)
    return planned
