"""The payments API through a real server configured with a real local chain: create,
retrieve, list with filters, cancel, isolation between merchants and modes, and bad input
(4xx naming the parameter, nothing written)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.db import Database
from stablegate.merchants import service as merchants
from stablegate.rails.intents import Intent, intent_digest
from tests.conftest import TEST_SECRET, ApiServer, Tenant, payments_env, start_server, stop_server


@pytest.fixture
def payments_api(api: ApiServer) -> ApiServer:
    """The session's API server: configured with the local chain (tests/conftest.py)."""
    return api


async def counts(db: Database) -> tuple[int, ...]:
    async with db.session() as session:
        row = await session.execute(
            text(
                "SELECT (SELECT count(*) FROM payments), (SELECT count(*) FROM payment_options),"
                " (SELECT count(*) FROM events WHERE type LIKE 'payment.%'),"
                " (SELECT count(*) FROM rails_deposit_addresses), (SELECT count(*) FROM rails_intents)"
            )
        )
        return tuple(row.one())


def test_create_returns_quotes_and_both_ways_to_pay(payments_api: ApiServer, tenant: Tenant) -> None:
    body = {
        "amount": "25.00",
        "currency": "USD",
        "accepted": [{"chain": "local", "asset": "USDC"}],
        "description": "Order 1001",
        "metadata": {"order": "1001"},
        "reference": "order-1001",
        "success_url": "https://shop.example/thanks",
    }
    with payments_api.client(tenant.test_key) as client:
        created = client.post("/v1/payments", json=body, headers={"Idempotency-Key": "create-1"})
        assert created.status_code == 200, created.text
        payment = created.json()
        replay = client.post("/v1/payments", json=body, headers={"Idempotency-Key": "create-1"})
        assert replay.json() == payment and replay.headers["Idempotent-Replayed"] == "true"
        assert client.get(f"/v1/payments/{payment['id']}").json() == payment

    assert payment["id"].startswith("pay_") and payment["status"] == "requires_payment"
    assert (payment["amount"], payment["currency"], payment["amount_received"]) == ("25.00", "USD", "0.00")
    [usdc] = payment["options"]
    assert (usdc["quote"]["amount"], usdc["quote"]["amount_units"], usdc["quote"]["rate"]) == (
        "25.000000",
        "25000000",
        "1",
    )
    assert usdc["quote"]["expires_at"] <= payment["expires_at"]
    # The default, 30 min; both are whole seconds, and the expiry is computed just before the
    # row's created_at (the transaction's start), so 1799 to 1801 by rounding.
    assert 1799 <= payment["expires_at"] - payment["created"] <= 1801
    contract = usdc["instructions"]["contract"]
    intent = contract["intent"]
    assert (intent["amount"], intent["fee"], intent["token"]) == ("25000000", "250000", usdc["token"])
    # The signature is the platform's over exactly these terms (the router recovers this signer).
    from eth_account import Account
    from eth_keys import keys

    digest = intent_digest(
        Intent(
            id=bytes.fromhex(intent["id"][2:]),
            token=intent["token"],
            amount=int(intent["amount"]),
            fee=int(intent["fee"]),
            recipient=intent["recipient"],
            fee_recipient=intent["feeRecipient"],
            deadline=int(intent["deadline"]),
        ),
        chain_id=usdc["chain_id"],
        router=contract["router"],
    )
    signature = bytes.fromhex(contract["signature"][2:])
    signer = keys.Signature(signature[:64] + bytes([signature[64] - 27])).recover_public_key_from_msg_hash(digest)
    assert signer.to_checksum_address() == Account.from_key(DEV_PRIVATE_KEYS[0]).address
    deposit = usdc["instructions"]["deposit_address"]
    assert deposit["uri"] == f"ethereum:{usdc['token']}@31337/transfer?address={deposit['address']}&uint256=25000000"


def test_list_filters_and_isolation(payments_api: ApiServer, tenant: Tenant, other_tenant: Tenant) -> None:
    with payments_api.client(tenant.test_key) as client:
        ids = [
            client.post("/v1/payments", json={"amount": "1", "currency": "USD", "reference": f"r{i % 2}"}).json()["id"]
            for i in range(3)
        ]
        canceled = client.post(f"/v1/payments/{ids[0]}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        again = client.post(f"/v1/payments/{ids[0]}/cancel")
        assert again.status_code == 400 and again.json()["error"]["code"] == "payment_unexpected_state"

        listed = client.get("/v1/payments", params={"limit": 2}).json()
        assert [p["id"] for p in listed["data"]] == ids[::-1][:2] and listed["has_more"]
        assert [p["id"] for p in client.get("/v1/payments", params={"reference": "r0"}).json()["data"]] == [
            ids[2],
            ids[0],
        ]
        assert [p["id"] for p in client.get("/v1/payments", params={"status": "canceled"}).json()["data"]] == [ids[0]]
        future = client.get("/v1/payments", params={"created[gte]": 4102444800}).json()
        assert future["data"] == []
        first_s = client.get(f"/v1/payments/{ids[0]}").json()["created"]
        since = client.get("/v1/payments", params={"created[gte]": first_s, "limit": 100}).json()["data"]
        assert set(ids) <= {p["id"] for p in since}
        assert all(p["created"] >= first_s for p in since)
        before = client.get("/v1/payments", params={"created[lt]": first_s, "limit": 100}).json()["data"]
        assert not set(ids) & {p["id"] for p in before} and all(p["created"] < first_s for p in before)
        window = {"created[gte]": first_s, "created[lt]": first_s + 3600, "reference": "r1"}
        assert [p["id"] for p in client.get("/v1/payments", params=window).json()["data"]] == [ids[1]]

    for key in (other_tenant.test_key, tenant.live_key):
        with payments_api.client(key) as client:
            assert client.get(f"/v1/payments/{ids[1]}").status_code == 404
            assert client.post(f"/v1/payments/{ids[1]}/cancel").status_code == 404
            assert ids[1] not in [p["id"] for p in client.get("/v1/payments").json()["data"]]


async def test_late_money_is_accepted_once_and_only_when_late(
    payments_api: ApiServer, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    """Accepting is the alternative to refunding late money (the money itself arrives on
    chain: tests/payments/test_on_chain.py); here the API's rules around it."""
    with payments_api.client(tenant.test_key) as client:
        body = {"amount": "2", "currency": "USD"}
        on_time, late = (client.post("/v1/payments", json=body).json()["id"] for _ in "ab")
        refused = client.post(f"/v1/payments/{on_time}/accept")
        assert refused.status_code == 400
        assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == ("payment_unexpected_state", "id")
        async with db.session() as session:  # as the follower leaves a payment paid after it expired
            flag_late = "UPDATE payments SET status = 'expired', late = true WHERE id = :id"
            await session.execute(text(flag_late), {"id": late})
        for key in (other_tenant.test_key, tenant.live_key):
            with payments_api.client(key) as other:
                assert other.post(f"/v1/payments/{late}/accept").status_code == 404
        accepted = client.post(f"/v1/payments/{late}/accept")
        assert accepted.status_code == 200 and accepted.json()["late"] is True
        accepted_at = accepted.json()["late_accepted_at"]
        assert isinstance(accepted_at, int)
        again = client.post(f"/v1/payments/{late}/accept").json()
        assert again["late_accepted_at"] == accepted_at
        assert client.get(f"/v1/payments/{on_time}").json()["late_accepted_at"] is None
        events = client.get("/v1/events", params={"type": "payment.late_accepted"}).json()["data"]
        assert [e["data"]["object"]["id"] for e in events] == [late]  # once, however often accepted


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("too many decimals", {"amount": "1.001"}, "amount", "parameter_invalid"),
    # 31 significant digits: beyond the default decimal precision, which used to round it away
    ("too many decimals, long", {"amount": "1.000000000000000000000000000001"}, "amount", "parameter_invalid"),
    ("zero", {"amount": "0"}, "amount", "parameter_invalid"),
    ("negative", {"amount": "-5"}, "amount", "parameter_invalid"),
    ("huge", {"amount": "1000000000001"}, "amount", "parameter_invalid"),
    ("number, not string", {"amount": 25}, "amount", "parameter_invalid"),
    ("exponent", {"amount": "1e3"}, "amount", "parameter_invalid"),
    ("unknown currency", {"currency": "XYZ"}, "currency", "currency_unsupported"),
    ("lower-case currency", {"currency": "usd"}, "currency", "parameter_invalid"),
    ("unknown chain", {"accepted": [{"chain": "solana", "asset": "USDC"}]}, "accepted[0][chain]", "chain_unsupported"),
    ("unknown asset", {"accepted": [{"chain": "local", "asset": "WBTC"}]}, "accepted[0][asset]", "asset_unsupported"),
    (
        "duplicate option",
        {"accepted": [{"chain": "local", "asset": "USDC"}, {"chain": "local", "asset": "USDC"}]},
        "accepted[1]",
        "parameter_invalid",
    ),
    ("empty accepted", {"accepted": []}, "accepted", "parameter_invalid"),
    ("no rate for the pair", {"currency": "JPY"}, "currency", "rate_unknown"),
    (
        "no rate for a chosen option",
        {"currency": "JPY", "accepted": [{"chain": "local", "asset": "USDC"}]},
        "accepted[0][asset]",
        "rate_unknown",
    ),
    ("expiry too short", {"expires_in_s": 59}, "expires_in_s", "parameter_invalid"),
    ("expiry too long", {"expires_in_s": 7 * 24 * 3600 + 1}, "expires_in_s", "parameter_invalid"),
    ("metadata too large", {"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata", "parameter_invalid"),
    ("metadata value too long", {"metadata": {"k": "v" * 501}}, "metadata[k]", "parameter_invalid"),
    ("metadata key too long", {"metadata": {"k" * 41: "v"}}, "metadata[" + "k" * 41 + "]", "parameter_invalid"),
    ("metadata value not text", {"metadata": {"k": 5}}, "metadata[k]", "parameter_invalid"),
    ("bad success url", {"success_url": "javascript:alert(1)"}, "success_url", "parameter_invalid"),
    ("success url without a host", {"success_url": "https:///thanks"}, "success_url", "parameter_invalid"),
    ("cancel url with a bad port", {"cancel_url": "https://shop.example:99999/"}, "cancel_url", "parameter_invalid"),
    ("unknown field", {"customer": "cus_1"}, "customer", "parameter_invalid"),
    ("NUL in description", {"description": "a\x00b"}, "description", "parameter_invalid"),
]


@pytest.mark.parametrize(("label", "change", "param", "code"), BAD, ids=[c[0] for c in BAD])
async def test_bad_input_names_the_parameter_and_writes_nothing(
    payments_api: ApiServer, tenant: Tenant, db: Database, label: str, change: dict[str, Any], param: str, code: str
) -> None:
    before = await counts(db)
    with payments_api.client(tenant.test_key) as client:
        reply = client.post("/v1/payments", json={"amount": "25.00", "currency": "USD"} | change)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert await counts(db) == before


async def test_an_unreadable_rate_feed_is_a_503_whose_idempotency_key_stays_usable(
    database_url: str, tmp_path: Path, tenant: Tenant, db: Database
) -> None:
    """The local chain's RPC is unreachable in this configuration, so a feed on it cannot
    be read: 503 with Retry-After naming the asset, nothing written, and the key is free
    for the retry the client was told to make (a stored 503 would be replayed for 24 h)."""
    env = payments_env(tmp_path) | {"STABLEGATE_FX_FEEDS": "USDC/EUR@local:0x" + "fe" * 20}
    server = start_server(database_url, tmp_path / "server.log", env)
    try:
        before = await counts(db)
        with server.client(tenant.test_key) as client:
            body = {"amount": "19.00", "currency": "EUR", "accepted": [{"chain": "local", "asset": "USDC"}]}
            reply = client.post("/v1/payments", json=body, headers={"Idempotency-Key": "feed-down-1"})
        assert reply.status_code == 503, reply.text
        error = reply.json()["error"]
        assert (error["code"], error["param"]) == ("rate_unavailable", "accepted[0][asset]")
        assert reply.headers["Retry-After"] == "5"
        assert await counts(db) == before
        async with db.session() as session:
            kept = await session.scalar(text("SELECT count(*) FROM idempotency_keys WHERE key = 'feed-down-1'"))
        assert kept == 0
    finally:
        stop_server(server)


def test_a_price_in_a_token_is_quoted_in_every_accepted_token(payments_api: ApiServer, tenant: Tenant) -> None:
    """Priced in USDC, payable in USDC (as is) or DAI (DAI/USDC crossed through USD, both
    pegged at 1 here, plus the spread): the merchant's default options all work."""
    with payments_api.client(tenant.test_key) as client:
        reply = client.post("/v1/payments", json={"amount": "10.00", "currency": "USDC"})
    assert reply.status_code == 200, reply.text
    options = {o["asset"]: o["quote"] for o in reply.json()["options"]}
    assert set(options) == {"USDC", "DAI"}
    assert (options["USDC"]["amount"], options["USDC"]["rate"]) == ("10.000000", "1")
    assert options["DAI"]["rate"] == "1" and Decimal(options["DAI"]["amount"]) >= 10


def test_a_live_key_cannot_use_a_test_chain(payments_api: ApiServer, tenant: Tenant) -> None:
    with payments_api.client(tenant.live_key) as client:
        reply = client.post("/v1/payments", json={"amount": "1", "currency": "USD"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "accepted"


async def test_restricted_keys_need_payment_scopes(payments_api: ApiServer, tenant: Tenant, db: Database) -> None:
    async with db.session() as session:
        created = await merchants.create_key(
            session,
            TEST_SECRET.encode(),
            merchant_id=tenant.merchant_id,
            mode="test",
            kind="restricted",
            scopes=["payments:read"],
        )
    with payments_api.client(created.secret) as client:
        assert client.get("/v1/payments").status_code == 200
        denied = client.post("/v1/payments", json={"amount": "1", "currency": "USD"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_permissions"


@pytest.mark.parametrize(
    ("path", "params", "status", "param"),
    [
        ("/v1/payments/pay_%00abc", {}, 404, None),
        ("/v1/customers/cus_%00abc", {}, 404, None),
        ("/v1/events/evt_%00abc", {}, 404, None),
        ("/v1/webhook_endpoints/we_%00abc/deliveries", {}, 404, None),
        ("/v1/payments", {"reference": "a\x00b"}, 400, "reference"),
        ("/v1/payments", {"status": "paid"}, 400, "status"),
        ("/v1/payments", {"created[gte]": "yesterday"}, 400, "created[gte]"),
        ("/v1/payments", {"limit": 101}, 400, "limit"),
        ("/v1/payments", {"starting_after": "cus_01M86R214T1G6P3KR5DXGSB94F"}, 400, "starting_after"),
    ],
)
def test_bad_reads_are_4xx_naming_the_parameter(
    payments_api: ApiServer, tenant: Tenant, path: str, params: dict[str, Any], status: int, param: str | None
) -> None:
    with payments_api.client(tenant.test_key) as client:
        reply = client.get(path, params=params)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["param"] == param
