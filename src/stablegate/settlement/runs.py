"""Automatic settlement runs (design 0006): per-merchant schedules, settlement records, and
one Disperse batch transaction per chain and token for every merchant due in a run.

A merchant sets one schedule per (mode, asset): `daily` at a UTC time of day, or
`threshold` (when the available balance reaches an amount), each with a `minimum`, and a
payout destination. Every minute a run (`run_settlements`, one database transaction):

1. locks the schedules that may be due (`SKIP LOCKED`: a concurrent run takes the
   others; at most MAX_SCHEDULES_PER_RUN, least recently run first) and keeps the due
   ones — daily: not yet run today and past its time; threshold: available ≥ it;
2. per due merchant: checks the destination (live, past its cooling-off), lists the
   payments (confirmed receipts) and paid refunds no settlement covers yet, then reads the
   available balance — the payout amount — and the payout fee from the merchant's
   'payout' fee schedule; below the minimum, or nothing left after the fee, it skips;
3. reserves each merchant's amount in the ledger on its own savepoint (`isolated`), so
   one merchant whose balance moved (a manual payout in between) is skipped, not the run;
4. plans, per (chain, token), the treasury's ERC-20 approval of our Disperse contract
   (once: idempotent per owner_ref) and then one `disperseToken` intent per chunk of
   ≤ 500 recipients. Both are planned in this transaction, approval first, and the
   transaction manager signs planned intents in creation order, so the approval gets
   the lower nonce;
5. writes the settlement records with their items and the payouts (each carrying the
   batch's intent id: `service.on_intent` moves all of a batch's payouts together —
   broadcast, paid with the ledger posted, or failed with it voided), emits
   `settlement.created` and `payout.created`, and marks the schedules run.

What a record says: `gross`/`payment_fees`/`refunds` and the items describe the payments
and refunds the settlement covers, for accounting; `payout_amount` is the available
balance paid out. They differ when the merchant made manual payouts (money already taken
from the balance) or when more than MAX_ITEMS_PER_KIND objects waited (the rest are
listed by the next settlement). Items are read before the balance, so every listed
payment's credit is inside the amount paid.

A daily schedule is done for the day once a run decides it — settled, below its minimum,
or nothing left after the fee. Skips that can clear within the day (destination still
cooling off, balance moved, chain not configured) are tried again on the next run.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains.registry import ChainConfig, TokenConfig
from stablegate.errors import InvalidRequest, NotFound
from stablegate.kit.ids import is_valid_id, new_id
from stablegate.kit.pagination import Page, PageRequest
from stablegate.merchants.service import Principal
from stablegate.observability import metrics, tracing
from stablegate.payments import service as payments
from stablegate.pricing.fees import FeeSchedule, fee
from stablegate.rails import contracts
from stablegate.settlement import postings, repository, txmanager, views
from stablegate.settlement.postings import Outgoing
from stablegate.settlement.schemas import Settlement
from stablegate.settlement.service import Context
from stablegate.settlement.txmanager import TxRequest
from stablegate.webhooks import service as webhooks

log = structlog.get_logger(__name__)

MAX_SCHEDULES_PER_RUN = 10_000
MAX_ITEMS_PER_KIND = 1_000  # payments (and refunds) one record lists; the rest wait for the next
MAX_RECIPIENTS = 500  # Disperse.MAX_RECIPIENTS: one batch transaction's bound
BATCH_GAS_BASE = 60_000
BATCH_GAS_PER_RECIPIENT = 45_000  # a transferFrom to a new holder costs ~30-35k; the rest is headroom
MAX_TX_GAS = 30_000_000  # tx_intents.gas_limit's bound (a block's gas limit)
APPROVE_GAS = 80_000
MAX_APPROVALS = 5  # approvals tried per (chain, token) before batches are left to revert loudly
UNLIMITED_ALLOWANCE = 2**256 - 1  # not spent by transferFrom (most tokens, ours included)
APPROVE_SELECTOR = bytes.fromhex("095ea7b3")  # approve(address,uint256)
RESERVE_CHUNK = 400  # merchants per linked ledger batch: two transfers each, under ledger.MAX_BATCH
ENDED_INTENT_STATES = ("failed", "canceled")
_FINAL_SKIPS = frozenset({"below_minimum", "fee_exceeds_amount"})


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    schedules: int  # locked and looked at
    settlement_ids: tuple[str, ...]
    payout_ids: tuple[str, ...]
    batch_intent_ids: tuple[str, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason → schedules


class _Skip(Exception):
    """A due schedule not settled in this run, and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Due:
    """One merchant's settlement in the making."""

    schedule: Any
    chain: ChainConfig
    token: TokenConfig
    destination: Any
    amount: int  # leaves the available balance
    fee: int
    payments: list[Any]
    refunds: list[Any]
    settlement_id: str = field(default_factory=lambda: new_id("stl"))
    payout_id: str = field(default_factory=lambda: new_id("po"))
    intent_id: str | None = None

    @property
    def net(self) -> int:
        return self.amount - self.fee

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.schedule["merchant_id"], self.schedule["mode"], self.schedule["asset"])


# --- the run ---------------------------------------------------------------------------


async def run_settlements(session: AsyncSession, ctx: Context, now: dt.datetime) -> RunSummary:
    """One settlement run in the caller's transaction (the job commits it)."""
    assert now.tzinfo is not None, "runs use aware UTC times"
    run_id = new_id("srun")
    with tracing.span("settlement.run", run_id=run_id):
        utc = now.astimezone(dt.UTC)
        schedules = await repository.due_schedules(session, utc.date(), utc.time(), MAX_SCHEDULES_PER_RUN)
        if len(schedules) == MAX_SCHEDULES_PER_RUN:  # the rest wait for the next run: say so
            log.warning("settlement.run_full", run_id=run_id, schedules=len(schedules))
        outcome = _Outcome(run_id)
        due: list[_Due] = []
        for (mode, asset), rows in sorted(_by_mode_and_asset(schedules).items()):
            due += await _prepare_group(session, ctx, mode, asset, rows, now, outcome)
        settled = await _reserve_all(session, due, outcome)
        skipped, decided = outcome.skipped, outcome.decided
        intent_ids = await _plan_batches(session, ctx, settled, run_id)
        await _record(session, settled, run_id)
        await _announce(session, settled)
        await repository.mark_schedule_run(session, decided + [d.key for d in settled], utc.date())
    summary = RunSummary(
        run_id=run_id,
        schedules=len(schedules),
        settlement_ids=tuple(d.settlement_id for d in settled),
        payout_ids=tuple(d.payout_id for d in settled),
        batch_intent_ids=tuple(intent_ids),
        skipped=dict(skipped),
    )
    log.info(
        "settlement.run",
        run_id=run_id,
        schedules=summary.schedules,
        settled=len(settled),
        batches=len(intent_ids),
        skipped=summary.skipped,
    )
    return summary


def observe(summary: RunSummary) -> None:
    """Count a committed run (after commit: a retried transaction must not count twice)."""
    metrics.SETTLEMENT_RUNS.inc()
    metrics.SETTLEMENTS.labels("settled").inc(len(summary.settlement_ids))
    for reason, count in summary.skipped.items():
        metrics.SETTLEMENTS.labels(reason).inc(count)


def _daily_due(row: Any, now: dt.datetime) -> bool:
    today = now.astimezone(dt.UTC)
    ran_today = row["last_run_on"] is not None and row["last_run_on"] >= today.date()
    return not ran_today and today.time() >= row["daily_at_utc"]


@dataclass
class _Outcome:
    """What a run decided about the schedules it did not settle."""

    run_id: str
    skipped: Counter[str] = field(default_factory=Counter)
    decided: list[tuple[str, str, str]] = field(default_factory=list)  # done for today

    def skip(self, row: Any, skip: _Skip) -> None:
        self.skipped[skip.reason] += 1
        if skip.reason in _FINAL_SKIPS:
            self.decided.append((row["merchant_id"], row["mode"], row["asset"]))
        log.info(
            "settlement.skipped",
            run_id=self.run_id,
            merchant_id=row["merchant_id"],
            asset=row["asset"],
            reason=skip.reason,
        )


def _by_mode_and_asset(rows: Sequence[Any]) -> dict[tuple[str, str], list[Any]]:
    grouped: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        grouped.setdefault((row["mode"], row["asset"]), []).append(row)
    return grouped


async def _prepare_group(
    session: AsyncSession, ctx: Context, mode: str, asset: str, rows: list[Any], now: dt.datetime, outcome: _Outcome
) -> list[_Due]:
    """The settlements due now among one (mode, asset)'s schedules, with a fixed number of
    round trips whatever their count (a run covers thousands of merchants)."""
    rows = [r for r in rows if r["kind"] != "daily" or _daily_due(r, now)]
    if rows:
        balances = await postings.availables(session, [(r["merchant_id"], mode, asset) for r in rows])
        rows = [r for r, b in zip(rows, balances, strict=True) if r["kind"] != "threshold" or b >= int(r["threshold"])]
    if not rows:
        return []
    destinations = await repository.destinations_by_id(session, [r["destination_id"] for r in rows])
    payable = []
    for row in rows:
        try:
            payable.append((row, *_destination(ctx, row, destinations.get(row["destination_id"]), now)))
        except _Skip as skip:
            outcome.skip(row, skip)
    merchants = [row["merchant_id"] for row, *_ in payable]
    if not merchants:
        return []
    # Items first, then the balance: every payment listed is already credited in the amount.
    paid = _group_by(await repository.unsettled_payments_of(session, merchants, mode, asset, MAX_ITEMS_PER_KIND))
    refunded = _group_by(await repository.unsettled_refunds_of(session, merchants, mode, asset, MAX_ITEMS_PER_KIND))
    amounts = await postings.availables(session, [(m, mode, asset) for m in merchants])
    schedules = await payments.payout_fee_schedules(session, merchants, mode, asset, ctx.payout_fee_bps)
    due = []
    for (row, chain, token, destination), amount in zip(payable, amounts, strict=True):
        m = row["merchant_id"]
        try:
            charged = _payout_fee(row, amount, schedules[m])
        except _Skip as skip:
            outcome.skip(row, skip)
            continue
        due.append(_Due(row, chain, token, destination, amount, charged, paid.get(m, []), refunded.get(m, [])))
    return due


def _payout_fee(row: Any, amount: int, schedule: FeeSchedule) -> int:
    if amount <= 0 or amount < int(row["minimum"]):
        raise _Skip("below_minimum")
    charged = fee(amount, schedule)
    if charged >= amount:
        raise _Skip("fee_exceeds_amount")
    return charged


def _group_by(rows: Sequence[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row["merchant_id"], []).append(row)
    return grouped


def _destination(ctx: Context, row: Any, dest: Any, now: dt.datetime) -> tuple[ChainConfig, TokenConfig, Any]:
    if dest is None or dest["removed_at"] is not None or dest["merchant_id"] != row["merchant_id"]:
        raise _Skip("destination_removed")
    if dest["usable_after"] > now:
        raise _Skip("destination_cooling_off")
    if dest["asset"] != row["asset"]:
        raise _Skip("destination_mismatch")
    live = row["mode"] == "live"
    chain = next((c for c in ctx.chains if c.chain_id == dest["chain_id"] and c.livemode == live), None)
    token = None if chain is None else next((t for t in chain.tokens if t.asset == row["asset"]), None)
    if chain is None or token is None or chain.treasury is None or chain.disperse is None:
        raise _Skip("chain_unsupported")
    return chain, token, dest


def _outgoing(due: _Due) -> Outgoing:
    s = due.schedule
    return Outgoing(due.payout_id, s["merchant_id"], s["mode"], due.chain.chain_id, s["asset"], due.net, due.fee)


async def _reserve_all(session: AsyncSession, due: Sequence[_Due], outcome: _Outcome) -> list[_Due]:
    """The pending ledger transfers of every payout, a chunk per linked batch (one round
    trip for hundreds of merchants). A chunk refused (a balance moved since it was read)
    is retried merchant by merchant, so one merchant is skipped, not the run."""
    settled: list[_Due] = []
    for first in range(0, len(due), RESERVE_CHUNK):
        chunk = due[first : first + RESERVE_CHUNK]
        try:
            await postings.reserve(session, [_outgoing(d) for d in chunk], isolated=True)
            settled += chunk
        except InvalidRequest as exc:
            if exc.code != "balance_insufficient":
                raise
            settled += [d for d in chunk if await _reserve(session, d, outcome)]
    return settled


async def _reserve(session: AsyncSession, due: _Due, outcome: _Outcome) -> bool:
    try:
        await postings.reserve(session, [_outgoing(due)], isolated=True)
    except InvalidRequest as exc:
        if exc.code != "balance_insufficient":
            raise
        outcome.skip(due.schedule, _Skip("balance_insufficient"))
        return False
    return True


# --- the batch transactions -------------------------------------------------------------


@functools.cache
def _disperse_selector() -> bytes:
    """disperseToken's selector, from our compiled ABI (so a changed contract is noticed)."""
    entry = next(e for e in contracts.abi("Disperse") if e.get("name") == "disperseToken")
    signature = f"disperseToken({','.join(i['type'] for i in entry['inputs'])})"
    assert signature == "disperseToken(address,address[],uint256[])", signature
    return keccak(text=signature)[:4]


def disperse_call(token: str, recipients: Sequence[str], amounts: Sequence[int]) -> bytes:
    assert 0 < len(recipients) == len(amounts) <= MAX_RECIPIENTS
    assert all(0 < a < 2**256 for a in amounts)
    return _disperse_selector() + encode(["address", "address[]", "uint256[]"], [token, recipients, amounts])


def approve_call(spender: str, amount: int) -> bytes:
    return APPROVE_SELECTOR + encode(["address", "uint256"], [spender, amount])


def batch_gas(recipients: int) -> int:
    gas = BATCH_GAS_BASE + BATCH_GAS_PER_RECIPIENT * recipients
    assert 0 < recipients <= MAX_RECIPIENTS and gas <= MAX_TX_GAS
    return gas


async def _plan_batches(session: AsyncSession, ctx: Context, settled: Sequence[_Due], run_id: str) -> list[str]:
    """Per (chain, token): the approval, then one batch intent per chunk of recipients.
    Sets each payout's intent; returns the batch intents' ids."""
    groups: dict[tuple[int, str], list[_Due]] = {}
    for due in settled:
        groups.setdefault((due.chain.chain_id, due.token.address.lower()), []).append(due)
    intent_ids: list[str] = []
    for (chain_id, token), members in sorted(groups.items()):
        chain = members[0].chain
        assert chain.treasury is not None and chain.disperse is not None
        await _plan_allowance(session, ctx, chain, token)
        for index in range(0, len(members), MAX_RECIPIENTS):
            chunk = members[index : index + MAX_RECIPIENTS]
            request = TxRequest(
                chain_id=chain_id,
                signer=chain.treasury,
                purpose="payout_batch",
                owner_ref=f"batch:{run_id}:{chain_id}:{token}:{index // MAX_RECIPIENTS}",
                to=chain.disperse,
                data=disperse_call(token, [d.destination["address"] for d in chunk], [d.net for d in chunk]),
                gas_limit=batch_gas(len(chunk)),
                token=token,
                token_amount=sum(d.net for d in chunk),
            )
            intent = await txmanager.plan(session, request, ctx.fail_unsigned_after_s)
            for due in chunk:
                due.intent_id = intent["id"]
            intent_ids.append(intent["id"])
    return intent_ids


async def _plan_allowance(session: AsyncSession, ctx: Context, chain: ChainConfig, token: str) -> Any:
    """The treasury's unlimited approval of Disperse for `token`: planned once (later runs
    find it, whatever its state). If it failed or was canceled, every batch would revert,
    so a new one is planned under the next owner_ref — at most MAX_APPROVALS in all."""
    assert chain.treasury is not None and chain.disperse is not None
    base_ref = f"allowance:{chain.chain_id}:{token}:{chain.disperse.lower()}"
    row: Any = None
    for attempt in range(MAX_APPROVALS):
        request = TxRequest(
            chain_id=chain.chain_id,
            signer=chain.treasury,
            purpose="allowance",
            owner_ref=base_ref if attempt == 0 else f"{base_ref}:{attempt}",
            to=token,
            data=approve_call(chain.disperse, UNLIMITED_ALLOWANCE),
            gas_limit=APPROVE_GAS,
        )
        row = await txmanager.plan(session, request, ctx.fail_unsigned_after_s)
        if row["status"] not in ENDED_INTENT_STATES:
            return row
    log.error("settlement.allowance_failing", chain_id=chain.chain_id, token=token, approvals=MAX_APPROVALS)
    return row


# --- records, payouts, events ------------------------------------------------------------


async def _record(session: AsyncSession, settled: Sequence[_Due], run_id: str) -> None:
    records, items, payouts = [], [], []
    for d in settled:
        s = d.schedule
        records.append(
            {
                "id": d.settlement_id,
                "run_id": run_id,
                "merchant_id": s["merchant_id"],
                "mode": s["mode"],
                "asset": s["asset"],
                "gross": sum(int(p["amount"]) for p in d.payments),
                "payment_fees": sum(int(p["fee"]) for p in d.payments),
                "refunds": sum(int(r["amount"]) for r in d.refunds),
                "payout_amount": d.amount,
                "payout_fee": d.fee,
            }
        )
        items += [_item(d, "payment", p["payment_id"], p["amount"], p["fee"]) for p in d.payments]
        items += [_item(d, "refund", r["id"], r["amount"], 0) for r in d.refunds]
        payouts.append(_payout_values(d))
    if records:
        await repository.insert_settlements(session, records, items)
        await repository.insert_payouts(session, payouts)


def _item(due: _Due, kind: str, object_id: str, amount: Any, charged: Any) -> dict[str, Any]:
    values = {"kind": kind, "object_id": object_id, "amount": int(amount), "fee": int(charged)}
    return {"settlement_id": due.settlement_id} | values


def _payout_values(d: _Due) -> dict[str, Any]:
    assert d.intent_id is not None and 0 <= d.fee < d.amount
    return {
        "id": d.payout_id,
        "merchant_id": d.schedule["merchant_id"],
        "mode": d.schedule["mode"],
        "destination_id": d.destination["id"],
        "chain_id": d.chain.chain_id,
        "asset": d.schedule["asset"],
        "address": d.destination["address"],
        "amount": d.amount,
        "fee": d.fee,
        "tx_intent_id": d.intent_id,
        "settlement_id": d.settlement_id,
        "description": f"Settlement {d.settlement_id}",
        "metadata": {},
    }


async def _announce(session: AsyncSession, settled: Sequence[_Due]) -> None:
    """settlement.created and payout.created for every merchant settled, as the API shows them."""
    if not settled:
        return
    by_id = {d.settlement_id: d for d in settled}
    ids = list(by_id)
    records = await repository.settlement_records(session, ids)
    items = _group(await repository.settlement_items(session, ids))
    payouts = {p["settlement_id"]: p for p in await repository.payouts_of_settlements(session, ids)}
    for record in records:
        payout = payouts[record["id"]]
        view = views.settlement(record, items.get(record["id"], []), payout["id"])
        await _emit(session, record, "settlement.created", view.model_dump(mode="json"))
        due = by_id[record["id"]]
        payout_view = views.payout(payout, due.chain, due.token)
        await _emit(session, payout, "payout.created", payout_view.model_dump(mode="json"))
        log.info(
            "settlement.created",
            settlement_id=record["id"],
            payout_id=payout["id"],
            merchant_id=record["merchant_id"],
            amount=due.amount,
            fee=due.fee,
            intent_id=due.intent_id,
        )


async def _emit(session: AsyncSession, row: Any, type: str, data: dict[str, Any]) -> None:
    await webhooks.emit(
        session, merchant_id=row["merchant_id"], mode=row["mode"], type=type, object_id=row["id"], data=data
    )


def _group(items: Sequence[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for item in items:
        grouped.setdefault(item["settlement_id"], []).append(item)
    return grouped


# --- reading settlements (API) ------------------------------------------------------------


async def list_settlements(session: AsyncSession, principal: Principal, page: PageRequest) -> Page[Settlement]:
    rows = await repository.list_owned(session, "settlement_records", principal.merchant_id, principal.mode, page, {})
    return Page(data=await _settlement_views(session, rows.data), has_more=rows.has_more)


async def retrieve_settlement(session: AsyncSession, principal: Principal, settlement_id: str) -> Settlement:
    row = None
    if is_valid_id(settlement_id, "stl"):
        row = await repository.get_owned(
            session, "settlement_records", principal.merchant_id, principal.mode, settlement_id
        )
    if row is None:  # the same answer for another merchant's id and for nobody's
        raise NotFound(f"No such settlement: '{settlement_id[:64]}'.", param="id")
    (view,) = await _settlement_views(session, [row])
    return view


async def _settlement_views(session: AsyncSession, rows: Sequence[Any]) -> list[Settlement]:
    ids = [r["id"] for r in rows]
    if not ids:
        return []
    items = _group(await repository.settlement_items(session, ids))
    payouts = {p["settlement_id"]: p["id"] for p in await repository.payouts_of_settlements(session, ids)}
    return [views.settlement(r, items.get(r["id"], []), payouts.get(r["id"])) for r in rows]


# --- schedules (CLI, back office) ----------------------------------------------------------


@dataclass(frozen=True)
class ScheduleParams:
    merchant_id: str
    mode: str
    chain: str  # a configured chain's name
    asset: str  # the token's symbol on it, e.g. USDC
    destination: str  # dst_…
    daily_at: str | None = None  # "HH:MM", UTC
    threshold: str | None = None  # major units
    minimum: str | None = None  # major units; default: one base unit


async def set_schedule(session: AsyncSession, ctx: Context, params: ScheduleParams) -> Any:
    """Create or replace the merchant's schedule for one asset (daily at a time, or at a
    threshold). The destination's cooling-off is checked at each run, not here."""
    if (params.daily_at is None) == (params.threshold is None):
        raise InvalidRequest("Give either a daily time or a threshold.", param="daily_at")
    chain = ctx.chain(params.mode, params.chain, "chain")
    token = next((t for t in chain.tokens if t.symbol == params.asset), None)
    if token is None:
        raise InvalidRequest(f"Unsupported asset {params.asset} on {chain.name}.", param="asset")
    dest = None
    if is_valid_id(params.destination, "dst"):
        dest = await repository.destination(session, params.merchant_id, params.mode, params.destination)
    if dest is None:
        raise NotFound(f"No such payout destination: '{params.destination[:64]}'.", param="destination")
    if dest["removed_at"] is not None or (dest["chain_id"], dest["asset"]) != (chain.chain_id, token.asset):
        raise InvalidRequest(
            f"The destination must be a live one for {token.symbol} on {chain.name}.", param="destination"
        )
    values = {
        "merchant_id": params.merchant_id,
        "mode": params.mode,
        "asset": token.asset,
        "destination_id": dest["id"],
        "kind": "daily" if params.daily_at is not None else "threshold",
        "daily_at_utc": None if params.daily_at is None else _time_of_day(params.daily_at),
        "threshold": None if params.threshold is None else _units(params.threshold, token, "threshold"),
        "minimum": 1 if params.minimum is None else _units(params.minimum, token, "minimum"),
    }
    row = await repository.upsert_schedule(session, values)
    log.info("settlement.schedule_set", merchant_id=params.merchant_id, mode=params.mode, asset=token.asset)
    return row


def _time_of_day(text: str) -> dt.time:
    try:
        parsed = dt.time.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is not None or len(text) != len("HH:MM"):
        raise InvalidRequest("daily_at is a UTC time of day, HH:MM.", param="daily_at")
    return parsed


def _units(text: str, token: TokenConfig, param: str) -> int:
    try:
        return payments.parse_amount(text, token.decimals)
    except InvalidRequest as exc:  # parse_amount names `amount`; say which option was wrong
        raise InvalidRequest(exc.message.replace("amount", param), param=param, code=exc.code) from None
