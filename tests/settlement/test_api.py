"""The settlement API (design 0006) through the session's real server: payout
destinations, payouts and refunds over HTTP. Bad input is a 4xx error object naming the
parameter, with nothing written (rows counted before and after).

The `api` server plans transactions on the local chain configuration but runs no chain:
creating a payout writes rows and a planned transaction intent, it calls no RPC. The
server keeps the default 24 h cooling-off for new destinations, so tests that need a usable
destination move `usable_after` into the past in SQL: a shortcut for waiting a day (one
test runs a second server with the cooling-off configured to 0 instead)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from sqlalchemy import text

from stablegate import localnet
from stablegate.db import Database
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.merchants import service as merchants
from stablegate.rails.deploy import planned_local
from tests.conftest import TEST_SECRET, ApiServer, Tenant, payments_env, start_server, stop_server

LOCAL = localnet.chain_config(planned_local(), "http://127.0.0.1:9")  # what payments_env configures
USDC = next(t for t in LOCAL.tokens if t.symbol == "USDC")
UNITS = 10**USDC.decimals
DAY_S = 24 * 3600
ADDRESS = Account.from_key("0x" + "43" * 32).address  # EIP-55 checksummed, nobody else's
OTHER_ADDRESSES = [Account.from_key("0x" + f"{n:02x}" * 32).address for n in (0x44, 0x45, 0x46)]
GHOST = "01M86R214T1G6P3KR5DXGSB94F"  # a well-formed id body nobody has
MISSING = object()  # drop the field from the body

DESTINATION_TABLES = ("payout_destinations", "payout_destination_events", "events")
PAYOUT_TABLES = ("payouts", "tx_intents", "ledger_transfers", "ledger_accounts", "events")
REFUND_TABLES = ("refunds", "tx_intents", "ledger_transfers", "ledger_accounts", "events")


async def counts(db: Database, tables: tuple[str, ...]) -> dict[str, int]:
    async with db.session() as session:
        sql = ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in tables)
        row = (await session.execute(text(f"SELECT {sql}"))).one()
        return dict(zip(tables, row, strict=True))


async def rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with db.session() as session:
        return [tuple(r) for r in await session.execute(text(sql), params)]


async def make_usable(db: Database, destination_id: str) -> None:
    """Skip the cooling-off period: the shortcut for waiting 24 h (see the module doc)."""
    async with db.session() as session:
        await session.execute(
            text("UPDATE payout_destinations SET usable_after = now() - interval '1 second' WHERE id = :id"),
            {"id": destination_id},
        )


async def fund(db: Database, merchant_id: str, units: int, ref: str = "seed") -> None:
    """Available balance as if payments had settled: clearing → merchant available, through
    the ledger. The asset is defined as the payments domain defines it (if not already)."""
    async with db.session() as session:
        known = await session.execute(text("SELECT 1 FROM ledger_assets WHERE code = :c"), {"c": USDC.asset})
        if known.first() is None:
            await ledger.define_asset(
                session, USDC.asset, USDC.decimals, chain_id=LOCAL.chain_id, contract=USDC.address
            )
        clearing = await chart.clearing_account(session, LOCAL.chain_id, USDC.asset)
        available = await chart.merchant_account(session, merchant_id, "test", "available", USDC.asset)
        transfer = ledger.Transfer(
            id=f"test-api-credit:{merchant_id}:{ref}",
            debit_account=clearing.id,
            credit_account=available.id,
            asset=USDC.asset,
            amount=units,
        )
        await ledger.create_transfers(session, [transfer])


def available_units(client: Any) -> int:
    balance = client.get("/v1/balance")
    assert balance.status_code == 200, balance.text
    return next((int(b["amount"]) for b in balance.json()["available"] if b["asset"] == USDC.asset), 0)


def create_destination(client: Any, address: str = ADDRESS, **fields: Any) -> dict[str, Any]:
    reply = client.post(
        "/v1/payout_destinations", json={"chain": "local", "asset": "USDC", "address": address} | fields
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def usable_destination(api: ApiServer, tenant: Tenant, db: Database, address: str = ADDRESS) -> str:
    with api.client(tenant.test_key) as client:
        destination_id = str(create_destination(client, address)["id"])
    await make_usable(db, destination_id)
    return destination_id


def error_of(reply: Any, status: int = 400) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert set(error) >= {"type", "code", "message", "param"}, error
    return error


def with_change(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    body = base | change
    return {k: v for k, v in body.items() if v is not MISSING}


# --- destinations ----------------------------------------------------------------------


async def test_destination_create_retrieve_remove_with_audit(api: ApiServer, tenant: Tenant, db: Database) -> None:
    started = int(time.time())
    with api.client(tenant.test_key) as client:
        created = create_destination(client, ADDRESS.lower(), label="Cold wallet")
        finished = int(time.time()) + 1
        assert created["id"].startswith("dst_")
        assert created["address"] == ADDRESS, "lower-case in, EIP-55 out"
        assert (created["object"], created["chain"], created["chain_id"], created["asset"]) == (
            "payout_destination",
            "local",
            LOCAL.chain_id,
            "USDC",
        )
        assert (created["livemode"], created["removed"], created["label"]) == (False, False, "Cold wallet")
        assert started + DAY_S <= created["usable_after"] <= finished + DAY_S, "24 h cooling-off by default"
        assert client.get(f"/v1/payout_destinations/{created['id']}").json() == created

        removed = client.delete(f"/v1/payout_destinations/{created['id']}")
        assert removed.status_code == 200, removed.text
        assert removed.json() == created | {"removed": True}
        assert client.get(f"/v1/payout_destinations/{created['id']}").json()["removed"] is True
        again = client.delete(f"/v1/payout_destinations/{created['id']}")
        assert again.status_code == 200 and again.json()["removed"] is True, "removing twice is harmless"
        # Once removed, the address may be added again (with its own cooling-off).
        assert create_destination(client, ADDRESS)["id"] != created["id"]

    audit = await rows(
        db,
        "SELECT action, address, actor, merchant_id, mode FROM payout_destination_events"
        " WHERE destination_id = :id ORDER BY id",
        id=created["id"],
    )
    assert audit == [
        ("created", ADDRESS.lower(), tenant.test_key_id, tenant.merchant_id, "test"),
        ("removed", ADDRESS.lower(), tenant.test_key_id, tenant.merchant_id, "test"),
    ], "one audit row per change, none for the repeated removal"
    stored = await rows(
        db, "SELECT address, removed_at IS NOT NULL FROM payout_destinations WHERE id = :id", id=created["id"]
    )
    assert stored == [(ADDRESS.lower(), True)]
    events = await rows(db, "SELECT type FROM events WHERE object_id = :id ORDER BY id", id=created["id"])
    assert events == [("payout_destination.created",), ("payout_destination.removed",)]


def test_destination_list_paginates_newest_first(api: ApiServer, tenant: Tenant, other_tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        ids = [create_destination(client, address)["id"] for address in OTHER_ADDRESSES]
        ids.append(create_destination(client, OTHER_ADDRESSES[0], asset="DAI")["id"])  # same address, other token
        first = client.get("/v1/payout_destinations", params={"limit": 3}).json()
        assert [d["id"] for d in first["data"]] == ids[::-1][:3] and first["has_more"] is True
        assert first["url"] == "/v1/payout_destinations"
        rest = client.get("/v1/payout_destinations", params={"limit": 3, "starting_after": ids[1]}).json()
        assert [d["id"] for d in rest["data"]] == [ids[0]] and rest["has_more"] is False
        back = client.get("/v1/payout_destinations", params={"limit": 2, "ending_before": ids[0]}).json()
        assert [d["id"] for d in back["data"]] == [ids[2], ids[1]] and back["has_more"] is True
        between = client.get("/v1/payout_destinations", params={"starting_after": ids[3], "ending_before": ids[0]})
        assert [d["id"] for d in between.json()["data"]] == [ids[2], ids[1]]  # strictly between, newest first
        bad = client.get("/v1/payout_destinations", params={"starting_after": "po_" + GHOST})
        assert error_of(bad)["param"] == "starting_after"
    for key in (other_tenant.test_key, tenant.live_key):
        with api.client(key) as client:
            listed = client.get("/v1/payout_destinations", params={"limit": 100}).json()["data"]
            assert not {d["id"] for d in listed} & set(ids)


def _checksum_broken(address: str) -> str:
    """The checksummed address with the case of its first letter flipped."""
    i = next(i for i, c in enumerate(address) if i > 1 and c.isalpha())
    return address[:i] + address[i].swapcase() + address[i + 1 :]


BAD_DESTINATIONS: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("bad hex", {"address": "0x" + "zz" * 20}, "address", "parameter_invalid"),
    ("no 0x prefix", {"address": "ab" * 21}, "address", "parameter_invalid"),
    ("too short", {"address": "0x" + "ab" * 19}, "address", "parameter_invalid"),
    ("too long", {"address": "0x" + "ab" * 21}, "address", "parameter_invalid"),
    ("bad EIP-55 checksum", {"address": _checksum_broken(ADDRESS)}, "address", None),
    ("zero address", {"address": "0x" + "0" * 40}, "address", None),
    ("token contract", {"address": to_checksum_address(USDC.address)}, "address", None),
    ("token contract, lower case", {"address": USDC.address}, "address", None),
    ("missing address", {"address": MISSING}, "address", "parameter_invalid"),
    ("number instead of string", {"address": 1234}, "address", "parameter_invalid"),
    ("unknown chain", {"chain": "solana"}, "chain", "chain_unsupported"),
    ("upper-case chain", {"chain": "LOCAL"}, "chain", "parameter_invalid"),
    ("unknown asset", {"asset": "WBTC"}, "asset", "asset_unsupported"),
    ("lower-case asset", {"asset": "usdc"}, "asset", "parameter_invalid"),
    ("unknown field", {"memo": "x"}, "memo", "parameter_invalid"),
    ("NUL in label", {"label": "a\x00b"}, "label", "parameter_invalid"),
    ("label too long", {"label": "x" * 201}, "label", "parameter_invalid"),
    ("label as number", {"label": 7}, "label", "parameter_invalid"),
]


@pytest.mark.parametrize(("label", "change", "param", "code"), BAD_DESTINATIONS, ids=[c[0] for c in BAD_DESTINATIONS])
async def test_bad_destination_names_the_parameter_and_writes_nothing(
    api: ApiServer, tenant: Tenant, db: Database, label: str, change: dict[str, Any], param: str, code: str | None
) -> None:
    before = await counts(db, DESTINATION_TABLES)
    body = with_change({"chain": "local", "asset": "USDC", "address": ADDRESS}, change)
    with api.client(tenant.test_key) as client:
        error = error_of(client.post("/v1/payout_destinations", json=body))
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert await counts(db, DESTINATION_TABLES) == before


async def test_a_live_address_twice_is_destination_exists(api: ApiServer, tenant: Tenant, db: Database) -> None:
    with api.client(tenant.test_key) as client:
        create_destination(client, ADDRESS.lower())
        before = await counts(db, DESTINATION_TABLES)
        error = error_of(
            client.post("/v1/payout_destinations", json={"chain": "local", "asset": "USDC", "address": ADDRESS})
        )
        assert (error["param"], error["code"]) == ("address", "destination_exists"), "compared case-insensitively"
        assert await counts(db, DESTINATION_TABLES) == before
        # The other mode is another account: its test chain is not offered to a live key.
        with api.client(tenant.live_key) as live:
            live_error = error_of(
                live.post("/v1/payout_destinations", json={"chain": "local", "asset": "USDC", "address": ADDRESS})
            )
        assert (live_error["param"], live_error["code"]) == ("chain", "chain_unsupported")


def test_destination_reads_of_unknown_ids_are_404(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        for path in (f"/v1/payout_destinations/dst_{GHOST}", "/v1/payout_destinations/nope"):
            assert error_of(client.get(path), 404)["param"] == "id"
            assert error_of(client.delete(path), 404)["param"] == "id"
        # A NUL in the path is refused before routing, as for every other object.
        for method in ("GET", "DELETE"):
            assert client.request(method, "/v1/payout_destinations/dst_%00x").status_code == 404


# --- payouts ---------------------------------------------------------------------------


async def test_payout_to_a_destination_in_cooling_off_is_refused(api: ApiServer, tenant: Tenant, db: Database) -> None:
    await fund(db, tenant.merchant_id, 100 * UNITS)  # money is there: only the cooling-off stands in the way
    with api.client(tenant.test_key) as client:
        destination_id = create_destination(client)["id"]
        before = await counts(db, PAYOUT_TABLES)
        error = error_of(client.post("/v1/payouts", json={"amount": "1", "destination": destination_id}))
        assert (error["param"], error["code"]) == ("destination", "destination_cooling_off")
        assert available_units(client) == 100 * UNITS
    assert await counts(db, PAYOUT_TABLES) == before


BAD_PAYOUTS: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    ("above available (balance 0)", {"amount": "1"}, 400, "amount", "balance_insufficient"),
    ("too many decimals", {"amount": "1.0000001"}, 400, "amount", "parameter_invalid"),
    ("zero", {"amount": "0"}, 400, "amount", "parameter_invalid"),
    ("zero with decimals", {"amount": "0.000000"}, 400, "amount", "parameter_invalid"),
    ("negative", {"amount": "-1"}, 400, "amount", "parameter_invalid"),
    ("huge", {"amount": "1000000000001"}, 400, "amount", "parameter_invalid"),
    ("30 digits", {"amount": "9" * 30}, 400, "amount", "parameter_invalid"),
    ("exponent", {"amount": "1e3"}, 400, "amount", "parameter_invalid"),
    ("number, not string", {"amount": 5}, 400, "amount", "parameter_invalid"),
    ("missing amount", {"amount": MISSING}, 400, "amount", "parameter_invalid"),
    ("asset mismatch", {"asset": "DAI"}, 400, "asset", "asset_mismatch"),
    ("malformed asset", {"asset": "usdc"}, 400, "asset", "parameter_invalid"),
    ("nobody's destination", {"destination": "dst_" + GHOST}, 404, "destination", "resource_missing"),
    ("malformed destination", {"destination": "nope"}, 404, "destination", "resource_missing"),
    ("a payout id as destination", {"destination": "po_" + GHOST}, 404, "destination", "resource_missing"),
    ("missing destination", {"destination": MISSING}, 400, "destination", "parameter_invalid"),
    ("unknown field", {"to": ADDRESS}, 400, "to", "parameter_invalid"),
    ("NUL in description", {"description": "a\x00b"}, 400, "description", "parameter_invalid"),
    ("metadata value not a string", {"metadata": {"k": 1}}, 400, "metadata[k]", "parameter_invalid"),
]


@pytest.mark.parametrize(("label", "change", "status", "param", "code"), BAD_PAYOUTS, ids=[c[0] for c in BAD_PAYOUTS])
async def test_bad_payout_names_the_parameter_and_writes_nothing(
    api: ApiServer,
    tenant: Tenant,
    db: Database,
    label: str,
    change: dict[str, Any],
    status: int,
    param: str,
    code: str | None,
) -> None:
    destination_id = await usable_destination(api, tenant, db)  # the merchant has no balance
    before = await counts(db, PAYOUT_TABLES)
    body = with_change({"amount": "1", "destination": destination_id}, change)
    with api.client(tenant.test_key) as client:
        error = error_of(client.post("/v1/payouts", json=body), status)
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert await counts(db, PAYOUT_TABLES) == before


async def test_payout_to_another_merchants_or_modes_destination_is_404(
    api: ApiServer, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    destination_id = await usable_destination(api, tenant, db)
    await fund(db, other_tenant.merchant_id, 100 * UNITS)
    before = await counts(db, PAYOUT_TABLES)
    for key in (other_tenant.test_key, tenant.live_key):
        with api.client(key) as client:
            error = error_of(client.post("/v1/payouts", json={"amount": "1", "destination": destination_id}), 404)
            assert (error["param"], error["code"]) == ("destination", "resource_missing")
    assert await counts(db, PAYOUT_TABLES) == before


async def test_payout_to_a_removed_destination_is_refused(api: ApiServer, tenant: Tenant, db: Database) -> None:
    destination_id = await usable_destination(api, tenant, db)
    await fund(db, tenant.merchant_id, 100 * UNITS)
    with api.client(tenant.test_key) as client:
        assert client.delete(f"/v1/payout_destinations/{destination_id}").status_code == 200
        before = await counts(db, PAYOUT_TABLES)
        error = error_of(client.post("/v1/payouts", json={"amount": "1", "destination": destination_id}))
        assert (error["param"], error["code"]) == ("destination", "destination_removed")
        assert available_units(client) == 100 * UNITS
    assert await counts(db, PAYOUT_TABLES) == before


async def test_payout_reserves_funds_lists_and_cancels(api: ApiServer, tenant: Tenant, db: Database) -> None:
    destination_id = await usable_destination(api, tenant, db)
    await fund(db, tenant.merchant_id, 100 * UNITS)
    body = {
        "amount": "40",
        "destination": destination_id,
        "asset": "USDC",
        "description": "May",
        "metadata": {"k": "v"},
    }
    with api.client(tenant.test_key) as client:
        assert available_units(client) == 100 * UNITS
        created = client.post("/v1/payouts", json=body, headers={"Idempotency-Key": "payout-1"})
        assert created.status_code == 200, created.text
        payout = created.json()
        replay = client.post("/v1/payouts", json=body, headers={"Idempotency-Key": "payout-1"})
        assert replay.status_code == 200 and replay.json() == payout
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert payout["id"].startswith("po_") and payout["status"] == "pending"
        assert (payout["amount"], payout["amount_units"], payout["fee_units"], payout["net_units"]) == (
            "40.000000",
            str(40 * UNITS),
            "0",
            str(40 * UNITS),
        )
        assert (payout["destination"], payout["address"], payout["chain"], payout["asset"]) == (
            destination_id,
            ADDRESS,
            "local",
            "USDC",
        )
        assert (payout["tx_hash"], payout["description"], payout["metadata"]) == (None, "May", {"k": "v"})
        assert available_units(client) == 60 * UNITS, "reserved at creation, once"
        assert client.get(f"/v1/payouts/{payout['id']}").json() == payout

        # The reserve stops a second payout spending the same money.
        over = error_of(client.post("/v1/payouts", json={"amount": "60.000001", "destination": destination_id}))
        assert (over["param"], over["code"]) == ("amount", "balance_insufficient")
        second = client.post("/v1/payouts", json={"amount": "10", "destination": destination_id}).json()
        assert available_units(client) == 50 * UNITS

        listed = client.get("/v1/payouts").json()
        assert listed["url"] == "/v1/payouts" and [p["id"] for p in listed["data"]] == [second["id"], payout["id"]]
        assert [p["id"] for p in client.get("/v1/payouts", params={"limit": 1}).json()["data"]] == [second["id"]]

        canceled = client.post(f"/v1/payouts/{payout['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json() == payout | {"status": "canceled"}
        assert available_units(client) == 90 * UNITS, "the canceled payout's funds return"
        again = error_of(client.post(f"/v1/payouts/{payout['id']}/cancel"))
        assert (again["param"], again["code"]) == ("id", "payout_not_cancelable")
        assert available_units(client) == 90 * UNITS

        by_status = {
            s: [p["id"] for p in client.get("/v1/payouts", params={"status": s}).json()["data"]]
            for s in ("pending", "canceled", "paid")
        }
        assert by_status == {"pending": [second["id"]], "canceled": [payout["id"]], "paid": []}
        assert error_of(client.get("/v1/payouts", params={"status": "bogus"}))["param"] == "status"

    stored = await rows(
        db,
        "SELECT p.status, i.status, i.purpose, i.to_address FROM payouts p JOIN tx_intents i ON i.id = p.tx_intent_id"
        " WHERE p.merchant_id = :m ORDER BY p.id",
        m=tenant.merchant_id,
    )
    assert stored == [
        ("canceled", "canceled", "payout", USDC.address),
        ("pending", "planned", "payout", USDC.address),
    ], "one row per payout despite the replay; the canceled one's transaction never signs"
    events = await rows(db, "SELECT type FROM events WHERE object_id = :id ORDER BY id", id=payout["id"])
    assert events == [("payout.created",), ("payout.canceled",)]


async def test_payout_cancel_of_unknown_ids_is_404(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        for payout_id in ("po_" + GHOST, "nope", "dst_" + GHOST):
            assert error_of(client.post(f"/v1/payouts/{payout_id}/cancel"), 404)["param"] == "id"
            assert error_of(client.get(f"/v1/payouts/{payout_id}"), 404)["param"] == "id"


@pytest.fixture(scope="module")
def instant_api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A second server on the same database with the cooling-off configured to 0."""
    directory = tmp_path_factory.mktemp("instant_api")
    env = payments_env(directory) | {"STABLEGATE_DESTINATION_COOLING_OFF_S": "0"}
    server = start_server(database_url, directory / "server.log", env)
    yield server
    stop_server(server)


async def test_cooling_off_is_configurable(instant_api: ApiServer, tenant: Tenant, db: Database) -> None:
    await fund(db, tenant.merchant_id, 5 * UNITS)
    with instant_api.client(tenant.test_key) as client:
        destination = create_destination(client)
        assert destination["usable_after"] <= destination["created"] + 1
        created = client.post("/v1/payouts", json={"amount": "5", "destination": destination["id"]})
        assert created.status_code == 200, created.text
        assert available_units(client) == 0


# --- refunds ---------------------------------------------------------------------------


def unpaid_payment(client: Any) -> str:
    created = client.post("/v1/payments", json={"amount": "10.00", "currency": "USD"})
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


async def test_refund_of_an_unpaid_payment_is_refused(api: ApiServer, tenant: Tenant, db: Database) -> None:
    await fund(db, tenant.merchant_id, 100 * UNITS)  # the merchant could pay it: the payment received nothing
    with api.client(tenant.test_key) as client:
        payment_id = unpaid_payment(client)
        before = await counts(db, REFUND_TABLES)
        for body in ({}, {"amount": "1"}, {"chain": "local", "asset": "USDC", "amount": "1"}):
            reply = client.post("/v1/refunds", json={"payment": payment_id, "address": ADDRESS} | body)
            error = error_of(reply)
            assert (error["param"], error["code"]) == ("payment", "payment_not_refundable"), body
        assert client.get("/v1/refunds", params={"payment": payment_id}).json()["data"] == []
    assert await counts(db, REFUND_TABLES) == before


async def test_refund_of_another_merchants_or_modes_payment_is_404_naming_payment(
    api: ApiServer, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    with api.client(tenant.test_key) as client:
        payment_id = unpaid_payment(client)
    before = await counts(db, REFUND_TABLES)
    for key in (other_tenant.test_key, tenant.live_key):
        with api.client(key) as client:
            error = error_of(client.post("/v1/refunds", json={"payment": payment_id, "address": ADDRESS}), 404)
            assert (error["param"], error["code"]) == ("payment", "resource_missing"), error
    assert await counts(db, REFUND_TABLES) == before


BAD_REFUNDS: list[tuple[str, dict[str, Any], tuple[int, ...], str]] = [
    ("nobody's payment", {"payment": "pay_" + GHOST}, (404,), "payment"),
    ("malformed payment id", {"payment": "nope"}, (400, 404), "payment"),
    ("a payout id as payment", {"payment": "po_" + GHOST}, (400, 404), "payment"),
    ("NUL in payment id", {"payment": "pay_\x00"}, (400, 404), "payment"),
    ("missing payment", {"payment": MISSING}, (400,), "payment"),
    ("bad hex address", {"address": "0x" + "zz" * 20}, (400,), "address"),
    ("short address", {"address": "0x123"}, (400,), "address"),
    ("missing address", {"address": MISSING}, (400,), "address"),
    ("number address", {"address": 5}, (400,), "address"),
    ("exponent amount", {"amount": "1e3"}, (400,), "amount"),
    ("negative amount", {"amount": "-1"}, (400,), "amount"),
    ("unknown field", {"sender": ADDRESS}, (400,), "sender"),
    ("NUL in reason", {"reason": "a\x00b"}, (400,), "reason"),
]


@pytest.mark.parametrize(("label", "change", "statuses", "param"), BAD_REFUNDS, ids=[c[0] for c in BAD_REFUNDS])
async def test_bad_refund_names_the_parameter_and_writes_nothing(
    api: ApiServer,
    tenant: Tenant,
    db: Database,
    label: str,
    change: dict[str, Any],
    statuses: tuple[int, ...],
    param: str,
) -> None:
    with api.client(tenant.test_key) as client:
        payment_id = unpaid_payment(client)
        before = await counts(db, REFUND_TABLES)
        reply = client.post("/v1/refunds", json=with_change({"payment": payment_id, "address": ADDRESS}, change))
    assert reply.status_code in statuses, reply.text
    assert error_of(reply, reply.status_code)["param"] == param
    assert await counts(db, REFUND_TABLES) == before


def test_refund_reads(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        listed = client.get("/v1/refunds").json()
        assert (listed["url"], listed["data"], listed["has_more"]) == ("/v1/refunds", [], False)
        for payment in ("garbage", "pay_\x00", "cus_" + GHOST):
            assert error_of(client.get("/v1/refunds", params={"payment": payment}))["param"] == "payment"
        for refund_id in ("re_" + GHOST, "nope"):
            assert error_of(client.get(f"/v1/refunds/{refund_id}"), 404)["param"] == "id"


# --- scopes and the documented contract -------------------------------------------------


async def restricted_key(db: Database, tenant: Tenant, scopes: list[str]) -> str:
    async with db.session() as session:
        created = await merchants.create_key(
            session, TEST_SECRET.encode(), merchant_id=tenant.merchant_id, mode="test", kind="restricted", scopes=scopes
        )
    return str(created.secret)


async def test_restricted_keys_need_settlement_scopes(api: ApiServer, tenant: Tenant, db: Database) -> None:
    destination_id = await usable_destination(api, tenant, db)
    await fund(db, tenant.merchant_id, 100 * UNITS)
    before = await counts(db, (*PAYOUT_TABLES, "payout_destinations", "refunds"))
    reader = await restricted_key(db, tenant, ["payouts:read", "refunds:read"])
    with api.client(reader) as client:
        assert client.get("/v1/payouts").status_code == 200
        assert client.get("/v1/payout_destinations").status_code == 200
        assert client.get(f"/v1/payout_destinations/{destination_id}").status_code == 200
        assert client.get("/v1/refunds").status_code == 200
        denied = [
            client.post("/v1/payouts", json={"amount": "1", "destination": destination_id}),
            client.post(
                "/v1/payout_destinations", json={"chain": "local", "asset": "USDC", "address": OTHER_ADDRESSES[0]}
            ),
            client.delete(f"/v1/payout_destinations/{destination_id}"),
            client.post(f"/v1/payouts/po_{GHOST}/cancel"),
            client.post("/v1/refunds", json={"payment": "pay_" + GHOST, "address": ADDRESS}),
        ]
    for reply in denied:
        assert error_of(reply, 403)["code"] == "insufficient_permissions", reply.request.url
    other = await restricted_key(db, tenant, ["payments:read", "payments:write"])
    with api.client(other) as client:
        for path in ("/v1/payouts", "/v1/payout_destinations", "/v1/refunds"):
            assert client.get(path).status_code == 403, path
    assert await counts(db, (*PAYOUT_TABLES, "payout_destinations", "refunds")) == before


def test_openapi_documents_the_404_of_creates_that_name_other_objects(api: ApiServer) -> None:
    """POST /v1/payouts answers 404 for an unknown destination and POST /v1/refunds for an
    unknown payment; the schema must say so (schemathesis checks every status)."""
    paths = api.client().get("/openapi.json").json()["paths"]
    for path in ("/v1/payouts", "/v1/refunds"):
        assert "404" in paths[path]["post"]["responses"], path
