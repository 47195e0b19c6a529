"""Shared fixtures: a real PostgreSQL database per test worker (DATABASE_URL's server or
the embedded one), migrated to head, and a real API server process on a loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

TEST_SECRET = "test-only-hmac-secret-0123456789abcdef"
os.environ["STABLEGATE_SECRET_KEY"] = TEST_SECRET

from stablegate import embedded_pg, migrations  # noqa: E402
from stablegate.chains.anvil import Anvil  # noqa: E402
from stablegate.config import Settings  # noqa: E402
from stablegate.db import Database, with_database  # noqa: E402
from stablegate.kit.net import free_port  # noqa: E402
from stablegate.merchants import service as merchants  # noqa: E402

SERVER_START_TIMEOUT_S = 30.0


def admin_url() -> str:
    """A URL with rights to create databases: DATABASE_URL's server, else the embedded one."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured
    return embedded_pg.server_url(Settings().data_dir / "pg")


def recreate_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin, name)


@pytest.fixture(scope="session")
def database_url(worker_id: str) -> str:
    # The suffix keeps a nested run (tests/e2e) from dropping the outer run's database.
    suffix = os.environ.get("STABLEGATE_TEST_DB_SUFFIX", "")
    url = recreate_database(admin_url(), f"stablegate_test_{worker_id}{suffix}")
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
async def db(database_url: str, settings: Settings) -> AsyncIterator[Database]:
    database = Database.connect(database_url, settings)
    yield database
    await database.dispose()


@dataclass
class ApiServer:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def async_client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=200)
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30, limits=limits)


def start_server(database_url: str, log_path: Path, extra_env: dict[str, str] | None = None) -> ApiServer:
    port = free_port()
    env = (
        os.environ
        | {
            "DATABASE_URL": database_url,
            "STABLEGATE_RATE_LIMIT_PER_S": "10000",
            "STABLEGATE_RATE_LIMIT_BURST": "10000",
            "STABLEGATE_LOG_LEVEL": "INFO",
        }
        | (extra_env or {})
    )
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "stablegate", "api", "--port", str(port)], env=env, stdout=log_file, stderr=log_file
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API server exited: {log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return ApiServer(base_url, log_path, process)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"API server did not start: {log_path.read_text()[-4000:]}")


def stop_server(server: ApiServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


def payments_env(directory: Path) -> dict[str, str]:
    """Configuration for a server that creates payments on the local chain (where a fresh
    anvil gets our contracts): creating one signs and derives, it calls no RPC. Webhook
    endpoints on this machine are allowed, as in development."""
    from stablegate import localnet
    from stablegate.chains import registry
    from stablegate.chains.anvil import DEV_PRIVATE_KEYS
    from stablegate.rails.deploy import planned_local

    chains_file = directory / "chains.json"
    chain = localnet.chain_config(planned_local(), "http://127.0.0.1:9")
    chains_file.write_text(json.dumps([registry.to_dict(chain)]))
    return {
        "STABLEGATE_CHAINS_FILE": str(chains_file),
        "STABLEGATE_INTENT_SIGNER_KEY": DEV_PRIVATE_KEYS[0],
        "STABLEGATE_WEBHOOK_ALLOW": "127.0.0.1/32",
    }


@pytest.fixture(scope="session")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    directory = tmp_path_factory.mktemp("api")
    server = start_server(database_url, directory / "server.log", payments_env(directory))
    yield server
    stop_server(server)


@dataclass
class Tenant:
    """A merchant with a secret key per mode."""

    merchant_id: str
    test_key: str
    live_key: str
    test_key_id: str


async def make_tenant(db: Database, name: str = "Test Merchant") -> Tenant:
    secret = TEST_SECRET.encode()
    async with db.session() as session:
        merchant = await merchants.create_merchant(session, name)
        test = await merchants.create_key(session, secret, merchant_id=merchant.id, mode="test")
        live = await merchants.create_key(session, secret, merchant_id=merchant.id, mode="live")
    return Tenant(merchant.id, test.secret, live.secret, test.key.id)


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    return await make_tenant(db, "Acme")


@pytest.fixture
async def other_tenant(db: Database) -> Tenant:
    return await make_tenant(db, "Other Co")


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A fresh local chain per test (anvil starts in ~0.1 s): reorg and crash tests rewrite
    history, so no test shares one."""
    with Anvil() as chain:
        yield chain
