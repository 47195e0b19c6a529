"""GET /v1/balance and /v1/balance_transactions over a real ledger."""

from __future__ import annotations

from stablegate.db import Database
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.ledger.service import Transfer
from tests.conftest import ApiServer, Tenant


async def book_payment_flow(db: Database, tenant: Tenant) -> None:
    """A 100.00 USD payment lands pending, settles, pays a 2.90 fee, and 50.00 is held for a payout."""
    m = tenant.merchant_id
    async with db.session() as s:
        await ledger.define_asset(s, "USD", 2)
        clearing = await ledger.open_account(s, f"test:{m}:clearing", "USD", "asset")
        pending = await chart.merchant_account(s, m, "test", "pending", "USD")
        available = await chart.merchant_account(s, m, "test", "available", "USD")
        fees = await chart.platform_account(s, "test", "fee_revenue", "USD")
        treasury = await ledger.open_account(s, f"test:{m}:treasury", "USD", "asset")
        meta = {"type": "payment", "source": "pay_01M86RAB3BXFWY9YDZJATWG97N"}
        await ledger.create_transfers(
            s,
            [
                Transfer(f"{m}:p1", clearing.id, pending.id, "USD", 10000, metadata=meta),
                Transfer(f"{m}:p1:settle", pending.id, available.id, "USD", 10000, metadata=meta),
                Transfer(
                    f"{m}:p1:fee", available.id, fees.id, "USD", 290, metadata={"type": "fee", "source": meta["source"]}
                ),
                Transfer(
                    f"{m}:po1",
                    available.id,
                    treasury.id,
                    "USD",
                    5000,
                    kind="pending",
                    metadata={"type": "payout", "source": "po_01M86RAB3BXFWY9YDZJATWG97N"},
                ),
                Transfer(
                    f"{m}:p2", clearing.id, pending.id, "USD", 700, metadata={"type": "payment", "source": "pay_2"}
                ),
            ],
        )


async def test_balance_and_its_transactions(api: ApiServer, db: Database, tenant: Tenant, other_tenant: Tenant) -> None:
    await book_payment_flow(db, tenant)
    with api.client(tenant.test_key) as client:
        balance = client.get("/v1/balance").json()
        page1 = client.get("/v1/balance_transactions", params={"limit": 3}).json()
        page2 = client.get(
            "/v1/balance_transactions", params={"limit": 3, "starting_after": page1["data"][-1]["id"]}
        ).json()
    # 100.00 - 2.90 fee - 50.00 reserved for the payout; 7.00 still pending.
    assert balance["available"] == [{"asset": "USD", "amount": "4710", "scale": 2}]
    assert balance["pending"] == [{"asset": "USD", "amount": "700", "scale": 2}]
    entries = page1["data"] + page2["data"]
    assert page1["has_more"] is True and page2["has_more"] is False
    by_type = {(e["type"], e["bucket"], e["amount"], e["status"]) for e in entries}
    assert ("payout", "available", "-5000", "pending") in by_type
    assert ("fee", "available", "-290", "posted") in by_type
    assert ("payment", "pending", "10000", "posted") in by_type
    settled = next(e for e in entries if e["bucket"] == "available" and e["amount"] == "10000")
    assert (settled["from_bucket"], settled["type"]) == ("pending", "payment")
    assert all(e["from_bucket"] is None for e in entries if e is not settled)
    # Per bucket, what reached it less what left it is the balance (nothing here is voided).
    for bucket in ("available", "pending"):
        net = sum(int(e["amount"]) for e in entries if e["bucket"] == bucket) - sum(
            int(e["amount"]) for e in entries if e["from_bucket"] == bucket
        )
        assert [{"asset": "USD", "amount": str(net), "scale": 2}] == balance[bucket], bucket
    assert all(e["id"].startswith("txn_") for e in entries)
    sources = {(e["type"], e["source"]) for e in entries}  # the object that caused each entry
    assert ("fee", "pay_01M86RAB3BXFWY9YDZJATWG97N") in sources
    assert ("payout", "po_01M86RAB3BXFWY9YDZJATWG97N") in sources
    assert ("payment", "pay_2") in sources
    with api.client(other_tenant.test_key) as client:
        assert client.get("/v1/balance_transactions").json()["data"] == []
        assert client.get("/v1/balance").json() == {
            "object": "balance",
            "livemode": False,
            "available": [],
            "pending": [],
        }
    with api.client(tenant.live_key) as client:
        assert client.get("/v1/balance").json()["available"] == []


async def test_balance_needs_its_scope(api: ApiServer, db: Database, tenant: Tenant) -> None:
    from stablegate.merchants import service as merchants
    from tests.conftest import TEST_SECRET

    async with db.session() as s:
        key = await merchants.create_key(
            s,
            TEST_SECRET.encode(),
            merchant_id=tenant.merchant_id,
            mode="test",
            kind="restricted",
            scopes=["customers:read"],
        )
    with api.client(key.secret) as client:
        assert client.get("/v1/balance").status_code == 403
        assert client.get("/v1/balance_transactions").status_code == 403
