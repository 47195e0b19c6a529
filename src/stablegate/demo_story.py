"""The demo's story (design 0007, "The demo"): money in three ways, a refund, a sweep and a
settlement payout. Every step goes through the real API server, worker, follower and
sender — the payer's wallet is a script, the merchant's server a webhook receiver — and
checks what the API and the chain say afterwards. `tie_out` then compares the ledger,
the API and the chain.

The story waits by polling the API; each poll mines one block on the demo's anvil, so
confirmations (3 blocks) come within a second and the run stays short.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from eth_account import Account
from eth_utils.crypto import keccak
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.demo_chain import DemoChain, Sent, Wallet
from stablegate.demo_receiver import Receiver
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.payments.schemas import major
from stablegate.settlement import runs, sweeps
from stablegate.settlement.service import Context

T = TypeVar("T")
Check = Callable[[str, bool, str], None]

USDC_DECIMALS = 6
WAIT_TIMEOUT_S = 30.0
WAIT_POLL_S = 0.15
MAX_LIST_PAGES = 20  # 100 objects a page: far more than the story makes
# The merchant's own wallet, where settlements are paid: a fixed key no one funds.
MERCHANT_WALLET = Account.from_key(keccak(text="stablegate demo: the merchant's wallet")).address


class StoryFailed(Exception):
    """A step could not go on (an API error, a wait that timed out, a process that died)."""


def usdc(units: int) -> str:
    """Base units as USDC for people: 25000000 → "25.00", 1234567 → "1.234567"."""
    text = major(abs(units), USDC_DECIMALS).rstrip("0")
    whole, _, fraction = text.partition(".")
    return ("-" if units < 0 else "") + f"{whole}.{fraction.ljust(2, '0')}"


def short(tx_hash: str | None) -> str:
    return "—" if not tx_hash else f"{tx_hash[:10]}…{tx_hash[-4:]}"


def percent_fee(units: int, bps: int) -> int:
    """The platform fee rule for a merchant without a schedule: ceil(amount × bps / 10 000)."""
    return min(-(-units * bps // 10_000), units)


@dataclass
class Expected:
    """What the ledger and the chain must show, from the story's own arithmetic."""

    net_credits: int = 0  # merchant available from payments
    fees: int = 0
    router_gross: int = 0
    router_fees: int = 0  # paid to the fee wallet by the router
    deposits: int = 0  # paid to deposit addresses
    refunds: int = 0
    swept: int = 0
    payout_net: int = 0  # to the merchant's wallet
    payout_fees: int = 0  # to fee revenue

    def credit(self, units: int, fee: int, *, router: bool) -> None:
        self.net_credits += units - fee
        self.fees += fee
        if router:
            self.router_gross += units
            self.router_fees += fee
        else:
            self.deposits += units

    @property
    def available(self) -> int:
        return self.net_credits - self.refunds - self.payout_net - self.payout_fees

    @property
    def revenue(self) -> int:
        return self.fees + self.payout_fees

    @property
    def treasury(self) -> int:
        """The treasury's balance, on chain and in the ledger (design 0004: a router payment
        is booked clearing → treasury and → fee wallet when it is confirmed)."""
        return self.router_gross - self.router_fees + self.swept - self.refunds - self.payout_net

    @property
    def clearing(self) -> int:
        """What deposit addresses hold, on chain and in the ledger."""
        return self.deposits - self.swept


@dataclass(frozen=True)
class Tx:
    what: str
    tx_hash: str
    block: int | None
    ok: bool


@dataclass
class Story:
    api: httpx.AsyncClient  # authenticated with the demo merchant's test key
    db: Database
    settings: Settings
    chain: DemoChain
    merchant_id: str
    console: Console
    check: Check
    alive: Callable[[], None]  # raises StoryFailed when a background process has died
    wallet: Wallet = field(init=False)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    payments: dict[str, str] = field(default_factory=dict)  # how it was paid → payment id
    deposit_addresses: list[str] = field(default_factory=list)
    txs: list[Tx] = field(default_factory=list)
    expect: Expected = field(default_factory=Expected)

    def __post_init__(self) -> None:
        self.wallet = Wallet(self.chain.rpc, self.chain.config.chain_id)

    # --- plumbing ------------------------------------------------------------------------

    def say(self, line: str) -> None:
        self.console.print(f"  {line}", highlight=False)

    def sent(self, what: str, sent: Sent) -> Sent:
        self.txs.append(Tx(what, sent.tx_hash, sent.block, sent.ok))
        return sent

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = await self.api.request(method, path, **kwargs)
        if reply.status_code != 200:
            raise StoryFailed(f"{method} {path} → {reply.status_code} {reply.text[:300]}")
        return reply.json()

    async def post(self, path: str, body: dict[str, Any], key: str) -> Any:
        return await self.call("POST", path, json=body, headers={"Idempotency-Key": f"demo-{self.run_id}-{key}"})

    async def list_all(self, path: str) -> list[Any]:
        items: list[Any] = []
        params: dict[str, Any] = {"limit": 100}
        for _ in range(MAX_LIST_PAGES):
            page = await self.call("GET", path, params=params)
            items += page["data"]
            if not page["has_more"]:
                return items
            params["starting_after"] = page["data"][-1]["id"]
        raise StoryFailed(f"GET {path}: more than {MAX_LIST_PAGES} pages")

    async def until(self, what: str, probe: Callable[[], Awaitable[T | None]], timeout_s: float = WAIT_TIMEOUT_S) -> T:
        """Poll `probe` until it returns something, mining a block per poll."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await probe()
            if found is not None:
                return found
            self.alive()
            if time.monotonic() > deadline:
                raise StoryFailed(f"gave up waiting for {what} after {timeout_s:g}s")
            await self.chain.rpc.mine()
            await asyncio.sleep(WAIT_POLL_S)

    async def object_when(self, path: str, what: str, ready: Callable[[Any], bool]) -> Any:
        async def probe() -> Any:
            found = await self.call("GET", path)
            return found if ready(found) else None

        return await self.until(what, probe)

    async def balance(self, holder: str) -> int:
        return await self.chain.rpc.balance(self.chain.usdc.address, holder)

    async def create_payment(self, amount: str, reference: str, how: str) -> Any:
        body = {
            "amount": amount,
            "currency": "USD",
            "reference": reference,
            "description": f"Demo order {reference}",
            "accepted": [{"chain": self.chain.config.name, "asset": "USDC"}],
        }
        payment = await self.post("/v1/payments", body, reference)
        self.payments[how] = payment["id"]
        option = payment["options"][0]
        self.deposit_addresses.append(option["instructions"]["deposit_address"]["address"])
        quoted = usdc(int(option["quote"]["amount_units"]))
        self.say(f"POST /v1/payments {amount} USD → {payment['id']}, quoted {quoted} USDC")
        return payment

    # --- the story -----------------------------------------------------------------------

    def steps(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return (
            self.paid_by_wallet,
            self.paid_by_transfer,
            self.underpaid_then_topped_up,
            self.refund,
            self.sweep,
            self.settlement,
        )

    async def paid_by_wallet(self) -> None:
        """A payment paid by wallet, through our router"""
        payment = await self.create_payment("25.00", "order-1001", "wallet")
        option = payment["options"][0]
        contract = option["instructions"]["contract"]
        units = int(option["quote"]["amount_units"])
        self.sent("payer: approve the router", await self.wallet.approve(option["token"], contract["router"], units))
        paid = self.sent(
            "payer: router.pay(signed intent)",
            await self.wallet.pay(contract["router"], contract["intent"], contract["signature"]),
        )
        self.say(f"the payer's wallet approves the router and pays the signed intent (block {paid.block})")
        path = f"/v1/payments/{payment['id']}"
        done = await self.object_when(path, "the wallet payment", lambda p: p["status"] == "succeeded")
        fee = int(contract["fee_units"])
        self.expect.credit(units, fee, router=True)
        rails = [r["rail"] for r in done["receipts"]]
        self.say(f"{done['status']}, paid {done['paid']}: {usdc(units - fee)} to the treasury, {usdc(fee)} fee")
        ok = paid.ok and done["paid"] == "exact" and rails == ["contract"]
        self.check("paid by wallet", ok, f"{payment['id']} {done['status']} ({done['paid']}) via the router")
        again = self.sent(
            "payer: the same intent again",
            await self.wallet.pay(contract["router"], contract["intent"], contract["signature"]),
        )
        self.check("same intent twice", not again.ok, "the router reverts a second payment (pay once)")

    async def paid_by_transfer(self) -> None:
        """A payment paid by a plain transfer to its deposit address"""
        payment = await self.create_payment("40.00", "order-1002", "transfer")
        option = payment["options"][0]
        address = option["instructions"]["deposit_address"]["address"]
        units = int(option["quote"]["amount_units"])
        look_alike = self.chain.net.stack.fake_usdc
        self.sent(
            "payer: look-alike 'USDC' to the deposit address", await self.wallet.transfer(look_alike, address, units)
        )
        sent = self.sent(
            "payer: USDC to the deposit address", await self.wallet.transfer(option["token"], address, units)
        )
        self.say(f"a look-alike 'USDC' token, then real USDC, sent to {address} (block {sent.block})")
        path = f"/v1/payments/{payment['id']}"
        done = await self.object_when(path, "the transfer payment", lambda p: p["status"] == "succeeded")
        self.expect.credit(units, percent_fee(units, self.settings.fee_bps), router=False)
        self.say(f"{done['status']}, paid {done['paid']}: the follower saw it and confirmed it 3 blocks deep")
        rails = [r["rail"] for r in done["receipts"]]
        self.check("paid by transfer", done["paid"] == "exact" and rails == ["deposit_address"], f"{payment['id']}")
        counted = len(done["receipts"]) == 1 and done["amount_received"] == "40.00"
        self.check("look-alike token ignored", counted, "only the configured USDC contract counts")

    async def underpaid_then_topped_up(self) -> None:
        """An underpayment, topped up by a second transfer"""
        payment = await self.create_payment("30.00", "order-1003", "2 transfers")
        option = payment["options"][0]
        address, token = option["instructions"]["deposit_address"]["address"], option["token"]
        units = int(option["quote"]["amount_units"])
        first, rest = units * 2 // 3, units - units * 2 // 3
        self.sent("payer: part of the amount", await self.wallet.transfer(token, address, first))
        path = f"/v1/payments/{payment['id']}"
        part = await self.object_when(path, "the underpayment", lambda p: p["paid"] == "underpaid")
        self.say(f"{usdc(first)} of {usdc(units)} USDC confirmed: {part['status']}, paid {part['paid']}")
        self.sent("payer: the rest", await self.wallet.transfer(token, address, rest))
        done = await self.object_when(path, "the top-up", lambda p: p["status"] == "succeeded")
        charged = 0  # the fee is the payment's: each part pays the total's fee less what was charged
        for paid_so_far, amount in ((first, first), (units, rest)):
            fee = percent_fee(paid_so_far, self.settings.fee_bps) - charged
            charged += fee
            self.expect.credit(amount, fee, router=False)
        self.say(f"{usdc(rest)} more: {done['status']}, paid {done['paid']}, {len(done['receipts'])} receipts")
        ok = (part["status"], part["paid"], done["paid"], len(done["receipts"])) == (
            "processing",
            "underpaid",
            "exact",
            2,
        )
        self.check("underpaid, then topped up", ok, f"{payment['id']} processing (underpaid) → succeeded (exact)")

    async def refund(self) -> None:
        """A refund, paid on chain by the transaction manager"""
        before = await self.balance(self.wallet.address)
        body = {
            "payment": self.payments["wallet"],
            "amount": "5.00",
            "address": self.wallet.address,
            "reason": "one item returned",
        }
        refund = await self.post("/v1/refunds", body, "refund")
        self.say(f"POST /v1/refunds 5.00 USDC of {body['payment']} → {refund['id']} ({refund['status']})")
        done = await self.object_when(f"/v1/refunds/{refund['id']}", "the refund", lambda r: r["status"] == "paid")
        units = int(done["amount_units"])
        self.expect.refunds += units
        received = await self.balance(self.wallet.address) - before
        self.sent("sender (treasury): refund", await self.chain.rpc.receipt(done["tx_hash"]))
        self.say(
            f"the sender signed it with the treasury key and sent it: {done['status']} (tx {short(done['tx_hash'])})"
        )
        ok = received == units and done["status"] == "paid"
        self.check("refund paid on chain", ok, f"{refund['id']}: the payer got {usdc(received)} USDC back")

    async def sweep(self) -> None:
        """A sweep of the deposit addresses into the treasury"""
        treasury = self.chain.config.treasury
        assert treasury is not None
        before = await self.balance(treasury)
        fail_after_s = self.settings.tx_fail_unsigned_after_s

        async def plan(session: AsyncSession) -> list[str]:
            return await sweeps.plan_sweeps(session, self.chain.config, fail_after_s)

        sweep_ids = await self.db.retrying(plan)
        self.say(f"plan_sweeps (the worker's sweep job) → {', '.join(sweep_ids) or 'nothing'}; the sender signs it")
        rows = await self.until("the sweep", lambda: self._sweeps_finished(sweep_ids))
        for row in rows:
            self.sent("sender (operator): sweep", await self.chain.rpc.receipt(row["tx_hash"]))
        moved = await self.balance(treasury) - before
        self.expect.swept += moved
        left = sum([await self.balance(a) for a in self.deposit_addresses])
        self.say(f"{usdc(moved)} USDC moved into the treasury; the deposit addresses hold {usdc(left)}")
        ok = len(rows) == 1 and rows[0]["status"] == "swept" and moved == self.expect.deposits and left == 0
        self.check("sweep to the treasury", ok, f"one transaction for {len(self.deposit_addresses)} deposit addresses")

    async def _sweeps_finished(self, sweep_ids: list[str]) -> list[Any] | None:
        sql = text(
            "SELECT s.id, s.status, i.tx_hash FROM sweeps s JOIN tx_intents i ON i.id = s.tx_intent_id"
            " WHERE s.id = ANY(:ids)"
        )
        async with self.db.session() as session:
            rows = list((await session.execute(sql, {"ids": sweep_ids})).mappings())
        return rows if rows and all(r["status"] != "pending" for r in rows) else None

    async def settlement(self) -> None:
        """A settlement payout: one Disperse batch pays out the balance"""
        name = self.chain.config.name
        body = {"chain": name, "asset": "USDC", "address": MERCHANT_WALLET, "label": "the merchant's own wallet"}
        destination = await self.post("/v1/payout_destinations", body, "destination")
        ctx = Context.from_settings(self.settings, [self.chain.config])
        params = runs.ScheduleParams(self.merchant_id, "test", name, "USDC", destination["id"], threshold="50.00")
        async with self.db.session() as session:
            await runs.set_schedule(session, ctx, params)
        self.say(f"payout destination {destination['id']} (cooling-off 0 for the demo); settle from 50.00 USDC up")
        await self.balance_ties_out("balance before the payout")

        async def settle(session: AsyncSession) -> runs.RunSummary:
            return await runs.run_settlements(session, ctx, dt.datetime.now(dt.UTC))

        summary = await self.db.retrying(settle)
        runs.observe(summary)
        if len(summary.payout_ids) != 1:
            raise StoryFailed(f"the settlement run settled {len(summary.payout_ids)} merchants: {summary.skipped}")
        self.say(f"settlement run (the worker's job) → {summary.settlement_ids[0]}, payout {summary.payout_ids[0]}")
        path = f"/v1/payouts/{summary.payout_ids[0]}"
        payout = await self.object_when(path, "the payout", lambda p: p["status"] in ("paid", "failed"))
        self.expect.payout_net += int(payout["net_units"])
        self.expect.payout_fees += int(payout["fee_units"])
        received = await self.balance(MERCHANT_WALLET)
        self.sent("sender (treasury): Disperse batch", await self.chain.rpc.receipt(payout["tx_hash"]))
        record = await self.call("GET", f"/v1/settlements/{summary.settlement_ids[0]}")
        kinds = sorted(item["kind"] for item in record["items"])
        listed = f"{kinds.count('payment')} payments and {kinds.count('refund')} refund"
        self.say(
            f"payout {payout['status']}: {usdc(received)} USDC in the merchant's wallet; the record lists {listed}"
        )
        ok = payout["status"] == "paid" and len(summary.batch_intent_ids) == 1 and received == int(payout["net_units"])
        self.check("settlement payout", ok, f"one batch transaction, {usdc(received)} USDC paid")
        self.check("settlement record", kinds == ["payment"] * 3 + ["refund"], "lists the 3 payments and the refund")

    async def availables(self) -> tuple[int, int]:
        """The merchant's available USDC as GET /v1/balance says and as the ledger says."""
        balance = await self.call("GET", "/v1/balance")
        asset = self.chain.usdc.asset
        from_api = sum(int(b["amount"]) for b in balance["available"] if b["asset"] == asset)
        async with self.db.session() as session:
            rows = await ledger.merchant_balances(session, self.merchant_id, "test")
        return from_api, sum(b.available for b in rows if b.asset == asset)

    async def balance_ties_out(self, label: str) -> None:
        """The merchant's available balance: the API = the ledger = the story's arithmetic."""
        from_api, in_ledger = await self.availables()
        ok = from_api == in_ledger == self.expect.available
        detail = f"API {usdc(from_api)} = ledger {usdc(in_ledger)} = expected {usdc(self.expect.available)} USDC"
        self.check(label, ok, detail)

    # --- after the story -----------------------------------------------------------------

    async def webhooks_delivered(self, endpoint_id: str, receiver: Receiver) -> list[Any]:
        """The endpoint's delivery log, once the receiver has had every delivery in it and
        each has been answered (or one failed to verify: no need to wait for retries)."""

        async def probe() -> list[Any] | None:
            deliveries = await self.list_all(f"/v1/webhook_endpoints/{endpoint_id}/deliveries")
            arrived = {d.webhook_id for d in receiver.snapshot()}
            answered = all(d["status"] != "pending" for d in deliveries) or bool(receiver.failures())
            return deliveries if deliveries and answered and {d["id"] for d in deliveries} <= arrived else None

        return await self.until("every webhook delivery", probe)

    async def ledger_and_chain(self) -> LedgerView:
        asset, chain_id = self.chain.usdc.asset, self.chain.config.chain_id
        async with self.db.session() as session:
            accounts = (
                await chart.clearing_account(session, chain_id, asset),
                await chart.treasury_account(session, chain_id, asset),
                await chart.fee_wallet_account(session, chain_id, asset),
                await chart.platform_account(session, "test", "fee_revenue", asset),
            )
            clearing, treasury, fee_wallet, revenue = [await ledger.balance(session, a.id) for a in accounts]
        cfg = self.chain.config
        assert cfg.treasury and cfg.fee_recipient
        deposits = sum([await self.balance(a) for a in self.deposit_addresses])
        from_api, in_ledger = await self.availables()
        return LedgerView(
            merchant_available=in_ledger,
            api_available=from_api,
            clearing=_debit_balance(clearing),
            treasury=_debit_balance(treasury),
            fee_wallet=_debit_balance(fee_wallet),
            fee_revenue=revenue.credit_balance_posted,
            pending=sum(b.debits_pending + b.credits_pending for b in (clearing, treasury, fee_wallet, revenue)),
            chain_deposits=deposits,
            chain_treasury=await self.balance(cfg.treasury),
            chain_fee_wallet=await self.balance(cfg.fee_recipient),
        )


@dataclass(frozen=True)
class LedgerView:
    """Balances in USDC base units: the ledger's (asset accounts debit-normal) and the chain's."""

    merchant_available: int
    api_available: int
    clearing: int
    treasury: int
    fee_wallet: int
    fee_revenue: int
    pending: int  # in these accounts: nothing once every transfer has settled
    chain_deposits: int
    chain_treasury: int
    chain_fee_wallet: int

    @property
    def ledger_tokens(self) -> int:
        return self.clearing + self.treasury + self.fee_wallet

    @property
    def chain_tokens(self) -> int:
        return self.chain_deposits + self.chain_treasury + self.chain_fee_wallet


def _debit_balance(balance: ledger.Balance) -> int:
    return balance.debits_posted - balance.credits_posted
