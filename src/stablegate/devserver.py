"""Run the API (and the worker) inside the current event loop: `dev` and `demo` use it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.kit.net import free_port
from stablegate.main import create_app
from stablegate.observability import tracing

STARTUP_TIMEOUT_S = 20.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a loop we own: signals are ours (run_dev), not uvicorn's, which would
    re-raise them into the loop after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Serving:
    base_url: str
    task: asyncio.Task[None]
    server: uvicorn.Server


@asynccontextmanager
async def serving(url: str, settings: Settings, host: str, port: int) -> AsyncIterator[Serving]:
    """Serve the API until the block exits (or the server stops on a signal)."""
    db = Database.connect(url, settings)
    tracing.instrument_engine(db.engine.sync_engine)
    port = port or free_port(host)
    config = uvicorn.Config(create_app(settings, db), host=host, port=port, log_level="warning", access_log=False)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield Serving(f"http://{host}:{port}", task, server)
    finally:
        server.should_exit = True
        await task
        await db.dispose()


async def run_dev(url: str, settings: Settings, host: str, port: int) -> None:
    from stablegate.jobs.app import run_worker

    async with serving(url, settings, host, port) as api:
        print(f"stablegate dev: API on {api.base_url} (docs {api.base_url}/docs), worker running; Ctrl-C stops")
        worker = asyncio.create_task(run_worker(url, settings, concurrency=2, install_signal_handlers=False))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: setattr(api.server, "should_exit", True))
        # Whichever stops first (a signal stops the API), the other follows.
        await asyncio.wait({api.task, worker}, return_when=asyncio.FIRST_COMPLETED)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
