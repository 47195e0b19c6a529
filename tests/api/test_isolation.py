"""Another merchant's or the other mode's objects are 404 on every endpoint, never 403.

Table-driven: every route with an id in its path must appear in OWNED_ROUTES (a meta-test
fails when a new endpoint is added without a row here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from eth_account import Account
from sqlalchemy import text

from stablegate import localnet
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.kit.ids import new_id
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.main import create_app
from stablegate.rails.deploy import planned_local
from tests.conftest import ApiServer, Tenant


@dataclass(frozen=True)
class OwnedRoute:
    method: str
    path: str  # with {id} where the object's id goes
    create: Callable[[Any], str]  # makes an object with the owner's client, returns its id
    read: str  # where the owner reads the object, to check nothing changed
    body: dict[str, Any] | None = None


def _customer(client: Any) -> str:
    r = client.post("/v1/customers", json={"name": "owned"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _payment(client: Any) -> str:
    r = client.post("/v1/payments", json={"amount": "1.00", "currency": "USD"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _event(client: Any) -> str:
    payment_id = _payment(client)
    events = client.get("/v1/events", params={"type": "payment.created", "limit": 100}).json()["data"]
    return next(str(e["id"]) for e in events if e["data"]["object"]["id"] == payment_id)


def _endpoint(client: Any) -> str:
    r = client.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/hooks"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


# Payouts and refunds need state the API cannot create on a server without a running chain
# (a destination past its cooling-off, an available balance, a confirmed payment); these
# helpers add it through the database the session's server uses.
_database: dict[str, str] = {}
LOCAL = localnet.chain_config(planned_local(), "http://127.0.0.1:9")  # what the `api` server follows
USDC = next(t for t in LOCAL.tokens if t.symbol == "USDC")


@pytest.fixture(autouse=True)
def _remember_database(database_url: str) -> None:
    _database["url"] = database_url


def _sql(statement: str, *params: Any) -> None:
    with psycopg.connect(_database["url"], autocommit=True) as conn:
        conn.execute(statement, params)


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """An async helper from these sync tests, on its own loop (not the session's)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


async def _credit(merchant_id: str, units: int) -> None:
    """Available USDC.local as if payments had settled (clearing → available), through the ledger."""
    usdc = USDC
    database = Database.connect(_database["url"], Settings())
    try:
        async with database.session() as session:
            if await session.scalar(text("SELECT count(*) FROM ledger_assets WHERE code = :c"), {"c": usdc.asset}) == 0:
                await ledger.define_asset(
                    session, usdc.asset, usdc.decimals, chain_id=LOCAL.chain_id, contract=usdc.address
                )
            clearing = await chart.clearing_account(session, LOCAL.chain_id, usdc.asset)
            available = await chart.merchant_account(session, merchant_id, "test", "available", usdc.asset)
            credit = ledger.Transfer(
                id=f"isolation-credit:{new_id('t')}",
                debit_account=clearing.id,
                credit_account=available.id,
                asset=usdc.asset,
                amount=units,
            )
            await ledger.create_transfers(session, [credit])
    finally:
        await database.dispose()


def _destination(client: Any) -> str:
    address = Account.create().address
    r = client.post("/v1/payout_destinations", json={"chain": "local", "asset": "USDC", "address": address})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _payout(client: Any) -> str:
    destination_id = _destination(client)
    # Skip the 24 h cooling-off instead of waiting for it.
    _sql("UPDATE payout_destinations SET usable_after = now() - interval '1 second' WHERE id = %s", destination_id)
    _run(_credit(client.get("/v1/account").json()["id"], 10**6))
    r = client.post("/v1/payouts", json={"amount": "1", "destination": destination_id})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _refund(client: Any) -> str:
    """A refund row for an (unpaid) payment: creating one needs a confirmed on-chain
    payment (tests/settlement covers that on anvil); reading it needs only the row."""
    payment_id = _payment(client)
    merchant_id = client.get("/v1/account").json()["id"]
    intent_id, refund_id, address = new_id("txi"), new_id("re"), Account.create().address.lower()
    _sql(
        "INSERT INTO tx_intents (id, chain_id, signer, purpose, owner_ref, to_address, data, gas_limit,"
        " fail_unsigned_at) VALUES (%s, %s, %s, 'refund', %s, %s, ''::bytea, 100000, now() + interval '1 hour')",
        intent_id, LOCAL.chain_id, LOCAL.treasury, refund_id, USDC.address,
    )  # fmt: skip
    _sql(
        "INSERT INTO refunds (id, merchant_id, mode, payment_id, chain_id, asset, address, amount, tx_intent_id)"
        " VALUES (%s, %s, 'test', %s, %s, %s, %s, 1000000, %s)",
        refund_id, merchant_id, payment_id, LOCAL.chain_id, USDC.asset, address, intent_id,
    )  # fmt: skip
    return str(refund_id)


def _settlement(client: Any) -> str:
    """A settlement record row: runs create them on anvil (tests/settlement/test_runs.py)."""
    merchant_id, settlement_id = client.get("/v1/account").json()["id"], new_id("stl")
    _sql(
        "INSERT INTO settlement_records (id, run_id, merchant_id, mode, asset, gross, payment_fees, refunds,"
        " payout_amount, payout_fee) VALUES (%s, 'srun_x', %s, 'test', %s, 0, 0, 0, 1, 0)",
        settlement_id, merchant_id, USDC.asset,
    )  # fmt: skip
    return str(settlement_id)


OWNED_ROUTES = [
    OwnedRoute("GET", "/v1/customers/{id}", _customer, "/v1/customers/{id}"),
    OwnedRoute("POST", "/v1/customers/{id}", _customer, "/v1/customers/{id}", {"name": "hijacked"}),
    OwnedRoute("GET", "/v1/payments/{id}", _payment, "/v1/payments/{id}"),
    OwnedRoute("POST", "/v1/payments/{id}/cancel", _payment, "/v1/payments/{id}"),
    OwnedRoute("GET", "/v1/events/{id}", _event, "/v1/events/{id}"),
    OwnedRoute("GET", "/v1/webhook_endpoints/{id}", _endpoint, "/v1/webhook_endpoints/{id}"),
    OwnedRoute("POST", "/v1/webhook_endpoints/{id}", _endpoint, "/v1/webhook_endpoints/{id}", {"description": "x"}),
    OwnedRoute("DELETE", "/v1/webhook_endpoints/{id}", _endpoint, "/v1/webhook_endpoints/{id}"),
    OwnedRoute("POST", "/v1/webhook_endpoints/{id}/rotate_secret", _endpoint, "/v1/webhook_endpoints/{id}"),
    OwnedRoute("GET", "/v1/webhook_endpoints/{id}/deliveries", _endpoint, "/v1/webhook_endpoints/{id}"),
    OwnedRoute("GET", "/v1/payout_destinations/{id}", _destination, "/v1/payout_destinations/{id}"),
    OwnedRoute("DELETE", "/v1/payout_destinations/{id}", _destination, "/v1/payout_destinations/{id}"),
    OwnedRoute("GET", "/v1/payouts/{id}", _payout, "/v1/payouts/{id}"),
    OwnedRoute("POST", "/v1/payouts/{id}/cancel", _payout, "/v1/payouts/{id}"),
    OwnedRoute("GET", "/v1/refunds/{id}", _refund, "/v1/refunds/{id}"),
    OwnedRoute("GET", "/v1/settlements/{id}", _settlement, "/v1/settlements/{id}"),
]


def test_every_route_with_an_id_is_in_the_table(db: Database, settings: Settings) -> None:
    paths = create_app(settings, db).openapi()["paths"]
    with_ids = {(method.upper(), path.split("{")[0]) for path, item in paths.items() if "{" in path for method in item}
    assert with_ids, "the API has routes with ids"
    covered = {(r.method, r.path.split("{")[0]) for r in OWNED_ROUTES}
    assert with_ids <= covered, f"add rows to OWNED_ROUTES for {sorted(with_ids - covered)}"


@pytest.mark.parametrize("route", OWNED_ROUTES, ids=lambda r: f"{r.method} {r.path}")
@pytest.mark.parametrize("intruder", ["other_merchant_test", "other_merchant_live", "same_merchant_live"])
def test_foreign_objects_are_not_found(
    api: ApiServer, tenant: Tenant, other_tenant: Tenant, route: OwnedRoute, intruder: str
) -> None:
    with api.client(tenant.test_key) as owner:
        object_id = route.create(owner)
        before = owner.get(route.read.format(id=object_id)).content
    key = {
        "other_merchant_test": other_tenant.test_key,
        "other_merchant_live": other_tenant.live_key,
        "same_merchant_live": tenant.live_key,
    }[intruder]
    with api.client(key) as client:
        r = client.request(route.method, route.path.format(id=object_id), json=route.body)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "resource_missing" and error["param"] == "id"
    # Same answer as for an id that never existed: nothing confirms the object exists.
    with api.client(key) as client:
        ghost_id = object_id[: object_id.index("_") + 1] + "01M86R214T1G6P3KR5DXGSB94F"
        ghost = client.request(route.method, route.path.format(id=ghost_id), json=route.body)
    assert ghost.status_code == 404 and ghost.json()["error"]["code"] == error["code"]
    with api.client(tenant.test_key) as owner:
        assert owner.get(route.read.format(id=object_id)).content == before, "nothing changed"


def test_lists_show_only_own_mode_and_merchant(api: ApiServer, tenant: Tenant, other_tenant: Tenant) -> None:
    with api.client(tenant.test_key) as mine:
        mine_id = mine.post("/v1/customers", json={"name": "mine"}).json()["id"]
    with api.client(other_tenant.test_key) as theirs:
        theirs.post("/v1/customers", json={"name": "theirs"})
        listed = [c["id"] for c in theirs.get("/v1/customers", params={"limit": 100}).json()["data"]]
    with api.client(tenant.live_key) as live:
        live_listed = [c["id"] for c in live.get("/v1/customers", params={"limit": 100}).json()["data"]]
    assert mine_id not in listed
    assert mine_id not in live_listed
