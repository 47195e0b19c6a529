"""The periodic expiry job, run by the real worker."""

from __future__ import annotations

import asyncio
import time

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.jobs import outbox
from stablegate.jobs.app import run_worker
from stablegate.ledger import jobs as ledger_jobs
from stablegate.ledger import service as ledger
from stablegate.ledger.service import Transfer
from tests.ledger.conftest import Book


async def test_worker_expires_timed_out_pending(
    db: Database, database_url: str, settings: Settings, book: Book
) -> None:
    k = book.cash.id
    async with db.session() as s:
        await ledger.create_transfers(
            s,
            [Transfer(f"job-hold-{k}", book.cash.id, book.fees.id, "USD", 70, kind="pending", timeout_s=1)],
        )
    await asyncio.sleep(1.1)
    async with db.session() as s:
        await outbox.enqueue(s, ledger_jobs.expire_pending, timestamp=int(time.time()))
    await run_worker(
        database_url, settings, concurrency=1, wait=False, install_signal_handlers=False, queues=["system"]
    )
    async with db.session() as s:
        after = await ledger.balance(s, book.fees.id)
    assert after.credits_pending == 0
    assert after.credits_posted == 0
