"""Idempotency-Key semantics against the real server and database."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, text

from stablegate.customers.models import Customer
from stablegate.db import Database
from tests.conftest import ApiServer, Tenant


async def count_customers(db: Database, merchant_id: str) -> int:
    async with db.session() as session:
        return int(
            await session.scalar(select(func.count()).select_from(Customer).where(Customer.merchant_id == merchant_id))
            or 0
        )


async def test_50_concurrent_duplicates_create_exactly_one(api: ApiServer, db: Database, tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    body = {"email": "buyer@example.com", "metadata": {"order": "42"}}
    async with api.async_client(tenant.test_key) as client:
        same = [client.post("/v1/customers", json=body, headers={"Idempotency-Key": key}) for _ in range(50)]
        different = client.post("/v1/customers", json=body | {"name": "x"}, headers={"Idempotency-Key": key})
        responses = await asyncio.gather(*same, different)
    *dupes, odd = responses
    assert await count_customers(db, tenant.merchant_id) == 1
    created = [r for r in dupes if r.status_code == 200]
    in_use = [r for r in dupes if r.status_code == 409]
    assert len(created) + len(in_use) == 50
    assert created, "at least the first request must succeed"
    assert len({r.content for r in created}) == 1, "every success is the identical stored body"
    for r in in_use:
        assert r.json()["error"]["code"] == "idempotency_key_in_use"
        assert r.json()["error"]["param"] == "Idempotency-Key"
    assert odd.status_code in (400, 409)
    if odd.status_code == 400:
        assert odd.json()["error"]["type"] == "idempotency_error"
    # After everything settled, the different body is always refused.
    async with api.async_client(tenant.test_key) as client:
        late = await client.post("/v1/customers", json=body | {"name": "x"}, headers={"Idempotency-Key": key})
    assert late.status_code == 400 and late.json()["error"]["code"] == "idempotency_key_reused"


def test_replay_is_byte_for_byte(api: ApiServer, tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    with api.client(tenant.test_key) as client:
        first = client.post("/v1/customers", json={"name": "Ada"}, headers={"Idempotency-Key": key})
        # Same parameters with other key order and spacing are the same request.
        second = client.post(
            "/v1/customers",
            content=b'{ "name" :  "Ada" }',
            headers={"Idempotency-Key": key, "content-type": "application/json"},
        )
    assert first.status_code == 200
    assert second.content == first.content
    assert second.status_code == first.status_code
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["request-id"] != first.headers["request-id"]


async def test_keys_are_scoped_per_merchant_and_mode(
    api: ApiServer, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    key = str(uuid.uuid4())
    with api.client() as client:
        a = client.post(
            "/v1/customers",
            json={"name": "A"},
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {tenant.test_key}"},
        )
        b = client.post(
            "/v1/customers",
            json={"name": "A"},
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {other_tenant.test_key}"},
        )
        c = client.post(
            "/v1/customers",
            json={"name": "A"},
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {tenant.live_key}"},
        )
    assert len({a.json()["id"], b.json()["id"], c.json()["id"]}) == 3
    assert c.json()["livemode"] is True


async def test_validation_error_releases_the_key(api: ApiServer, db: Database, tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    with api.client(tenant.test_key) as client:
        bad = client.post("/v1/customers", json={"email": 7}, headers={"Idempotency-Key": key})
        good = client.post("/v1/customers", json={"email": "fixed@example.com"}, headers={"Idempotency-Key": key})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "email"
    assert good.status_code == 200
    assert await count_customers(db, tenant.merchant_id) == 1


@pytest.mark.parametrize(
    ("path", "content", "status", "param"),
    [
        ("/v1/customers/", b"{}", 404, None),  # a trailing slash: not a 307 to store and replay
        ("/v1/custmers", b"{}", 404, None),  # a typo in the URL
        ("/v1/customers", b'{"name": "\xff"}', 400, "body"),  # not UTF-8
        ("/v1/customers", b'{"name": ' + b"1" * 5000 + b"}", 400, "body"),  # a number too long to parse
    ],
    ids=["trailing-slash", "unknown-url", "bad-utf8", "huge-number"],
)
async def test_a_request_no_endpoint_answered_frees_its_key(
    api: ApiServer, db: Database, tenant: Tenant, path: str, content: bytes, status: int, param: str | None
) -> None:
    """Routing and body parsing fail before any endpoint runs: the corrected request
    with the same key is served, not refused as a reuse."""
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key, "content-type": "application/json"}
    with api.client(tenant.test_key) as client:
        bad = client.post(path, content=content, headers=headers)
        good = client.post("/v1/customers", json={"name": "fixed"}, headers={"Idempotency-Key": key})
    assert bad.status_code == status and bad.json()["error"]["param"] == param, bad.text
    assert good.status_code == 200, good.text
    assert await count_customers(db, tenant.merchant_id) == 1


async def test_endpoint_errors_are_stored_and_replayed(api: ApiServer, tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    with api.client(tenant.test_key) as client:
        first = client.post(
            "/v1/customers/cus_01M86R214T1G6P3KR5DXGSB94F", json={"name": "x"}, headers={"Idempotency-Key": key}
        )
        second = client.post(
            "/v1/customers/cus_01M86R214T1G6P3KR5DXGSB94F", json={"name": "x"}, headers={"Idempotency-Key": key}
        )
    assert first.status_code == 404
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"


async def test_abandoned_claim_is_taken_over_after_its_lock_expires(
    api: ApiServer, db: Database, tenant: Tenant
) -> None:
    """A process that died after claiming committed nothing, so a retry may proceed."""
    key = str(uuid.uuid4())
    async with db.session() as session:
        await session.execute(
            text(
                "INSERT INTO idempotency_keys (merchant_id, mode, key, fingerprint, state, locked_until, expires_at)"
                " VALUES (:m, 'test', :k, :fp, 'in_progress', now() + interval '30 seconds', now() + interval '1 day')"
            ),
            {"m": tenant.merchant_id, "k": key, "fp": b"\0" * 32},
        )
    with api.client(tenant.test_key) as client:
        # Fingerprint differs from the stored one: the claim belongs to other parameters.
        assert client.post("/v1/customers", json={}, headers={"Idempotency-Key": key}).status_code == 400
    from stablegate.kit.idempotency import fingerprint

    fp = fingerprint("POST", "/v1/customers", b"", b"{}")
    async with db.session() as session:
        await session.execute(
            text("UPDATE idempotency_keys SET fingerprint = :fp WHERE key = :k"), {"fp": fp, "k": key}
        )
    with api.client(tenant.test_key) as client:
        busy = client.post("/v1/customers", json={}, headers={"Idempotency-Key": key})
        assert busy.status_code == 409 and busy.headers["retry-after"] == "1"
        async with db.session() as session:
            await session.execute(
                text("UPDATE idempotency_keys SET locked_until = now() - interval '1 second' WHERE key = :k"),
                {"k": key},
            )
        taken = client.post("/v1/customers", json={}, headers={"Idempotency-Key": key})
        replay = client.post("/v1/customers", json={}, headers={"Idempotency-Key": key})
    assert taken.status_code == 200
    assert replay.content == taken.content
    assert await count_customers(db, tenant.merchant_id) == 1


def test_invalid_idempotency_key_is_rejected(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        r = client.post("/v1/customers", json={}, headers={"Idempotency-Key": "x" * 256})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "Idempotency-Key"
