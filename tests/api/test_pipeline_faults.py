"""Fault injection on the request pipeline, in-process (the app object with a real DB)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import func, select

from stablegate.config import Settings
from stablegate.customers import service as customers
from stablegate.customers.models import Customer
from stablegate.customers.schemas import CustomerCreate
from stablegate.db import Database
from stablegate.main import create_app
from stablegate.web import SessionDep, get_principal
from tests.conftest import Tenant


def faulty_app(db: Database, **overrides: object) -> FastAPI:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    app = create_app(settings, db)

    @app.post("/v1/_faults/create_then_crash")
    async def create_then_crash(session: SessionDep, request: Request) -> None:
        principal = await get_principal(request)
        await customers.create(session, principal, CustomerCreate(name="never committed"))
        raise RuntimeError("injected fault after a domain write")

    return app


@pytest.fixture
async def faulty(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=faulty_app(db, rate_limit_per_s=2, rate_limit_burst=3))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def count(db: Database, merchant_id: str) -> int:
    async with db.session() as session:
        return int(
            await session.scalar(select(func.count()).select_from(Customer).where(Customer.merchant_id == merchant_id))
            or 0
        )


async def test_5xx_rolls_back_writes_and_is_replayed(faulty: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    headers = {"Authorization": f"Bearer {tenant.test_key}", "Idempotency-Key": str(uuid.uuid4())}
    first = await faulty.post("/v1/_faults/create_then_crash", json={}, headers=headers)
    second = await faulty.post("/v1/_faults/create_then_crash", json={}, headers=headers)
    assert first.status_code == 500
    assert first.json()["error"]["type"] == "api_error"
    assert "injected" not in first.text, "internal details never leak"
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"
    assert await count(db, tenant.merchant_id) == 0


async def test_rate_limit_per_key(faulty: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    statuses = [
        (await faulty.get("/v1/account", headers={"Authorization": f"Bearer {tenant.test_key}"})).status_code
        for _ in range(6)
    ]
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses
    limited = await faulty.get("/v1/account", headers={"Authorization": f"Bearer {tenant.test_key}"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"
    # Another key has its own bucket.
    assert (
        await faulty.get("/v1/account", headers={"Authorization": f"Bearer {other_tenant.test_key}"})
    ).status_code == 200


async def test_database_down_is_a_503_error_object(settings: Settings, tenant: Tenant) -> None:
    dead = Database.connect("postgresql://postgres@127.0.0.1:1/nothing", settings)
    transport = httpx.ASGITransport(app=create_app(settings, dead))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/v1/account", headers={"Authorization": f"Bearer {tenant.test_key}"})
        ready = await client.get("/readyz")
    await dead.dispose()
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    assert ready.status_code == 503
