"""`stablegate watcher`: one follower per configured chain in one process, until SIGINT or
SIGTERM. Several watcher processes may run: per chain, one leads (advisory lock) and the
others stand by, taking over when the leader's connection goes away."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from prometheus_client import start_http_server

from stablegate.chains.follower import Follower
from stablegate.chains.registry import ChainConfig
from stablegate.config import Settings
from stablegate.db import Database

log = structlog.get_logger(__name__)
RESTART_DELAY_S = 5.0


async def follow_forever(db: Database, chain: ChainConfig, stop: asyncio.Event) -> None:
    """A follower that survives database and provider outages: it restarts (and stands by
    for the lock again) after any failure until `stop` is set."""
    while not stop.is_set():
        try:
            await Follower(db, chain).run(stop)
        except Exception:  # a watcher outlives any one failure; logged with the stack
            log.exception("chain.follower_crashed", chain=chain.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY_S)


async def run(url: str, settings: Settings, chains: list[ChainConfig], metrics_port: int | None) -> None:
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    db = Database.connect(url, settings)
    try:
        log.info("watcher.started", chains=[c.name for c in chains], metrics_port=metrics_port)
        await asyncio.gather(*(follow_forever(db, chain, stop) for chain in chains))
    finally:
        await db.dispose()
        log.info("watcher.stopped")
