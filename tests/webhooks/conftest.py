"""Webhook fixtures: a real HTTP receiver on 127.0.0.1 (a thread, scripted per path), the
real worker run until a condition holds, and endpoints made through the service."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.jobs.app import run_worker
from stablegate.kit.tasks import cancel_and_wait
from stablegate.merchants.service import SCOPES, Principal
from stablegate.webhooks import service
from stablegate.webhooks.schemas import WebhookEndpointCreate
from tests.conftest import ApiServer, Tenant

ALLOW = ("127.0.0.1",)
WORKER_POLL_S = 0.02


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float  # time.monotonic() on arrival


class Receiver:
    """An HTTP server that records every request and answers from a per-path script (the
    last reply repeats; unscripted paths get 200)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                reply = receiver._arrive(self.path, dict(self.headers.items()), body)
                try:
                    time.sleep(reply.delay_s)
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker gave up waiting (timeout tests)
                finally:
                    with receiver._lock:
                        receiver.in_flight[self.path] -= 1

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _arrive(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.requests.append(Received(path, {k.lower(): v for k, v in headers.items()}, body, time.monotonic()))
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self.in_flight[path])
            script = self.scripts.get(path.split("?")[0], [])
            return script.pop(0) if len(script) > 1 else (script[0] if script else Reply())

    def url(self, path: str, *replies: Reply) -> str:
        if replies:
            self.scripts[path] = list(replies)
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="session")
def webhook_api(api: ApiServer) -> ApiServer:
    """The shared API server: it allows endpoints on 127.0.0.1 (STABLEGATE_WEBHOOK_ALLOW,
    development's setting; tests/conftest.py payments_env), which these tests register."""
    return api


def worker_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_allow": ",".join(ALLOW),
        "webhook_timeout_s": 2.0,
        "webhook_schedule_scale": 0.001,
        **overrides,
    }
    return Settings(**values)


def principal(tenant: Tenant, mode: str = "test") -> Principal:
    return Principal(merchant_id=tenant.merchant_id, mode=mode, key_id="key_test", kind="secret", scopes=SCOPES)


async def make_endpoint(
    db: Database, tenant: Tenant, url: str, event_types: list[str] | None = None, mode: str = "test"
) -> tuple[str, str]:
    """(endpoint id, secret)."""
    params = WebhookEndpointCreate.model_validate({"url": url, "event_types": event_types or []})
    async with db.session() as session:
        created = await service.create_endpoint(session, principal(tenant, mode), params, ALLOW)
    return created.endpoint.id, created.secret


async def emit(db: Database, tenant: Tenant, type: str = "payment.succeeded", mode: str = "test", **data: Any) -> str:
    async with db.session() as session:
        return await service.emit(
            session,
            merchant_id=tenant.merchant_id,
            mode=mode,
            type=type,
            object_id="pay_test",
            data={"id": "pay_test", "object": "payment", **data},
        )


async def delivery_rows(db: Database, event_id: str) -> list[Any]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT * FROM webhook_deliveries WHERE event_id = :e ORDER BY endpoint_id"), {"e": event_id}
        )
        return list(rows)


async def attempt_rows(db: Database, delivery_id: str) -> list[Any]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT * FROM webhook_attempts WHERE delivery_id = :d ORDER BY attempt"), {"d": delivery_id}
        )
        return list(rows)


@dataclass
class WorkerRunner:
    database_url: str

    async def until(
        self,
        condition: Callable[[], Awaitable[bool]],
        settings: Settings | None = None,
        timeout_s: float = 15.0,
        concurrency: int = 4,
    ) -> None:
        """Run the real worker (queue "webhooks") until `condition()` holds, then stop it."""
        task = asyncio.create_task(
            run_worker(
                self.database_url,
                settings or worker_settings(),
                concurrency=concurrency,
                install_signal_handlers=False,
                queues=["webhooks"],
                fetch_job_polling_interval=WORKER_POLL_S,
            )
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not await condition():
                assert not task.done(), task.exception() if not task.cancelled() else "worker cancelled"
                assert time.monotonic() < deadline, "condition not reached in time"
                await asyncio.sleep(0.02)
        finally:
            await cancel_and_wait(task)


@pytest.fixture
async def worker(database_url: str, db: Database) -> AsyncIterator[WorkerRunner]:
    yield WorkerRunner(database_url)
    # Retries (and manual requests) a test left due must not run (against a closed
    # receiver) in the next: nothing stays due.
    async with db.session() as session:
        await session.execute(
            text(
                "UPDATE webhook_deliveries SET status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,"
                " next_attempt_at = NULL, manual_requested_at = NULL, leased_until = NULL"
                " WHERE status = 'pending' OR manual_requested_at IS NOT NULL OR leased_until IS NOT NULL"
            )
        )
