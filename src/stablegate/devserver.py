"""Run the API (and the worker) inside the current event loop: `dev` and `demo` use it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.main import create_app
from stablegate.observability import tracing

STARTUP_TIMEOUT_S = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serving(url: str, settings: Settings, host: str, port: int) -> AsyncIterator[str]:
    """Serve the API until the block exits; yields the base URL."""
    db = Database.connect(url, settings)
    tracing.instrument_engine(db.engine.sync_engine)
    port = port or free_port(host)
    config = uvicorn.Config(create_app(settings, db), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        await db.dispose()


async def run_dev(url: str, settings: Settings, host: str, port: int) -> None:
    from stablegate.jobs.app import run_worker

    async with serving(url, settings, host, port) as base_url:
        print(f"stablegate dev: API on {base_url} (docs {base_url}/docs), worker running; Ctrl-C stops")
        await run_worker(url, settings, concurrency=2, install_signal_handlers=False)
