"""Bad input: each case is a 4xx error object naming the parameter, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from stablegate.customers.models import Customer
from stablegate.db import Database
from stablegate.kit.idempotency_models import IdempotencyKey
from tests.conftest import ApiServer, Tenant

JSON = {"content-type": "application/json"}

# (label, method, path, kwargs, status, code, param)
CASES: list[tuple[str, str, str, dict[str, Any], int, str, str | None]] = [
    (
        "malformed json",
        "POST",
        "/v1/customers",
        {"content": b'{"name": ', "headers": JSON},
        400,
        "json_invalid",
        "body",
    ),
    ("body is a list", "POST", "/v1/customers", {"json": [1, 2]}, 400, "parameter_invalid", "body"),
    ("wrong type", "POST", "/v1/customers", {"json": {"name": 12}}, 400, "parameter_invalid", "name"),
    ("bool for string", "POST", "/v1/customers", {"json": {"email": True}}, 400, "parameter_invalid", "email"),
    ("bad email", "POST", "/v1/customers", {"json": {"email": "not-an-email"}}, 400, "parameter_invalid", "email"),
    (
        "unknown field",
        "POST",
        "/v1/customers",
        {"json": {"name": "a", "admin": True}},
        400,
        "parameter_invalid",
        "admin",
    ),
    (
        "nested metadata type",
        "POST",
        "/v1/customers",
        {"json": {"metadata": {"a": 1}}},
        400,
        "parameter_invalid",
        "metadata[a]",
    ),
    (
        "too many metadata keys",
        "POST",
        "/v1/customers",
        {"json": {"metadata": {f"k{i}": "v" for i in range(51)}}},
        400,
        "parameter_invalid",
        "metadata",
    ),
    ("oversized string", "POST", "/v1/customers", {"json": {"name": "x" * 201}}, 400, "parameter_invalid", "name"),
    (
        "oversized body",
        "POST",
        "/v1/customers",
        {"json": {"description": "x" * 70_000}},
        413,
        "payload_too_large",
        None,
    ),
    ("negative limit", "GET", "/v1/customers", {"params": {"limit": -1}}, 400, "parameter_invalid", "limit"),
    ("zero limit", "GET", "/v1/customers", {"params": {"limit": 0}}, 400, "parameter_invalid", "limit"),
    ("huge limit", "GET", "/v1/customers", {"params": {"limit": 10**30}}, 400, "parameter_invalid", "limit"),
    ("text limit", "GET", "/v1/customers", {"params": {"limit": "ten"}}, 400, "parameter_invalid", "limit"),
    (
        "bogus cursor",
        "GET",
        "/v1/customers",
        {"params": {"starting_after": "garbage"}},
        400,
        "invalid_cursor",
        "starting_after",
    ),
    (
        "wrong-prefix cursor",
        "GET",
        "/v1/customers",
        {"params": {"ending_before": "pay_01M86R214T1G6P3KR5DXGSB94F"}},
        400,
        "invalid_cursor",
        "ending_before",
    ),
    ("unknown id", "GET", "/v1/customers/cus_nope", {}, 404, "resource_missing", "id"),
    ("overlong id", "GET", "/v1/customers/" + "c" * 65, {}, 400, "parameter_invalid", "id"),
    ("unknown url", "GET", "/v1/nothing_here", {}, 404, "url_not_found", None),
    ("wrong method", "DELETE", "/v1/customers", {}, 405, "method_not_allowed", None),
    # Query parameters a route does not declare, or gives twice, are refused, not ignored.
    ("unknown filter", "GET", "/v1/payments?created[gt]=5", {}, 400, "parameter_unknown", "created[gt]"),
    ("repeated limit", "GET", "/v1/customers?limit=1&limit=50", {}, 400, "parameter_invalid", "limit"),
    ("query on a create", "POST", "/v1/customers?expand=x", {"json": {}}, 400, "parameter_unknown", "expand"),
]


async def snapshot(db: Database, merchant_id: str) -> tuple[int, int]:
    async with db.session() as session:
        customers = await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.merchant_id == merchant_id)
        )
        keys = await session.scalar(
            select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.merchant_id == merchant_id)
        )
    return int(customers or 0), int(keys or 0)


@pytest.mark.parametrize(
    ("label", "method", "path", "kwargs", "status", "code", "param"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_input(
    api: ApiServer,
    db: Database,
    tenant: Tenant,
    label: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    param: str | None,
) -> None:
    before = await snapshot(db, tenant.merchant_id)
    headers = kwargs.pop("headers", {}) | (
        {"Idempotency-Key": "bad-" + label.replace(" ", "-")} if method == "POST" else {}
    )
    with api.client(tenant.test_key) as client:
        r = client.request(method, path, headers=headers, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"] and error["request_id"] == r.headers["request-id"]
    assert error["type"]
    if status < 500 and status not in (404, 405):
        assert await snapshot(db, tenant.merchant_id) == before, "nothing is written"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "nul\x00byte"}, "name"),
        ({"metadata": {"k": "v\x00"}}, "metadata[k]"),
        ({"metadata": {"k\x00": "v"}}, "metadata[k\x00]"),
    ],
)
async def test_text_postgres_cannot_store_is_rejected(
    api: ApiServer, db: Database, tenant: Tenant, body: dict[str, Any], param: str
) -> None:
    before = await snapshot(db, tenant.merchant_id)
    with api.client(tenant.test_key) as client:
        r = client.post("/v1/customers", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param.split("[")[0])
    assert await snapshot(db, tenant.merchant_id) == before


def test_lone_surrogate_is_rejected(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        r = client.post("/v1/customers", content=b'{"name": "\\ud800x"}', headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"


def test_405_lists_every_allowed_method(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        r = client.request("DELETE", "/v1/customers")
    assert r.headers["allow"] == "GET, POST"


async def test_two_idempotency_keys_are_refused(api: ApiServer, db: Database, tenant: Tenant) -> None:
    before = await snapshot(db, tenant.merchant_id)
    with api.client(tenant.test_key) as client:
        reply = client.post(
            "/v1/customers", json={}, headers=[("Idempotency-Key", "first"), ("Idempotency-Key", "second")]
        )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "Idempotency-Key"
    assert await snapshot(db, tenant.merchant_id) == before
