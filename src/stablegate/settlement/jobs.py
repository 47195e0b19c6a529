"""Settlement background work: the automatic settlement run, every minute (design 0006).

The run only plans: it reserves balances and records intents in one transaction. The
transaction manager of each (chain, signer) signs and sends them, and reports outcomes
to `service.on_intent` in the process that runs it.
"""

from __future__ import annotations

import datetime as dt

import procrastinate
import structlog

from stablegate.chains import registry
from stablegate.config import get_settings
from stablegate.jobs.runtime import Runtime
from stablegate.observability import metrics
from stablegate.settlement import runs
from stablegate.settlement.service import Context

log = structlog.get_logger(__name__)
tasks = procrastinate.Blueprint()


class _Configured:
    ctx: Context | None = None


def configure(ctx: Context) -> None:
    """The worker's settlement context; unset, it is built once from the environment."""
    _Configured.ctx = ctx


def context() -> Context:
    if _Configured.ctx is None:
        _Configured.ctx = Context.from_settings(get_settings(), registry.configured())
    return _Configured.ctx


@tasks.periodic(cron="* * * * *", periodic_id="settlement_run")
@tasks.task(name="settlement.run", queue="system", pass_context=False)
async def run(timestamp: int) -> int:
    """Settle every merchant whose schedule is due at the periodic tick's time; returns
    how many settlements were created. Safe to run twice: schedules are locked for the
    run and marked in its transaction, and a due merchant's balance is spent once."""
    ctx = context()
    now = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    summary = await Runtime.database().retrying(lambda session: runs.run_settlements(session, ctx, now))
    runs.observe(summary)
    metrics.JOBS_RUN.labels("settlement.run", "ok").inc()
    return len(summary.settlement_ids)
