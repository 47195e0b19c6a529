"""Payments (design 0004): create with quotes and payment instructions, read, list, cancel,
expire; and what on-chain receipts do to a payment. Flushes only; the request, job or
follower transaction commits.

Every state change goes through `state.transition` and records its events (webhooks.emit)
in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Context as DecimalContext
from decimal import Decimal, Inexact, InvalidOperation
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains import service as chains
from stablegate.chains.registry import ADDRESS, MAX_BLOCK_INTERVAL_S, ChainConfig, TokenConfig
from stablegate.chains.rpc import RpcClient
from stablegate.config import Settings
from stablegate.errors import InvalidRequest, NotFound, ServiceUnavailable
from stablegate.kit.ids import is_valid_id, new_id
from stablegate.kit.pagination import Page, PageRequest
from stablegate.merchants.service import Principal
from stablegate.observability import metrics
from stablegate.payments import repository, views
from stablegate.payments.schemas import Payment, PaymentCreate
from stablegate.payments.state import (
    AcceptLate,
    Cancel,
    Expire,
    InvalidTransition,
    PaymentState,
    Receipts,
    transition,
)
from stablegate.pricing import quotes
from stablegate.pricing.fees import FeeSchedule, fee
from stablegate.pricing.rates import (
    ChainlinkFeed,
    Crossed,
    Rate,
    RateProvider,
    RateUnavailable,
    Routed,
    StaticRates,
    checked,
)
from stablegate.rails import service as rails
from stablegate.rails.service import IntentTerms
from stablegate.webhooks import service as webhooks

log = structlog.get_logger(__name__)

PREFIX = "pay"
MAX_AMOUNT_MAJOR = 10**12  # a trillion of anything is a typo, not a payment
EXPIRE_BATCH = 100
# How long past its expiry the follower must have been at the chain's head before the job
# expires an unpaid payment: a block mined just before the expiry reaches our node within
# seconds (propagation); the follower's own lag is measured, not guessed (synced_at).
EXPIRY_GRACE_S = 30
EXPIRY_MAX_WAIT_S = 3600  # a chain's follower down this long no longer holds payments open
# The follower's watermark may hide up to a chain's max_block_interval_s behind a stuck
# provider; the grace has to cover it (chains/registry.py bounds it).
assert EXPIRY_GRACE_S >= MAX_BLOCK_INTERVAL_S
# ISO 4217 minor units of the fiat currencies we price in; tokens use their decimals.
FIAT_SCALES = {"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "SGD": 2, "JPY": 0}


@dataclass(frozen=True)
class Context:
    """What creating a payment needs from configuration: chains, rates, the intent signer."""

    chains: tuple[ChainConfig, ...]
    rates: RateProvider
    signer_key: str | None
    fee_bps: int
    spread_bps: int
    rate_max_age_s: float
    quote_ttl_s: int

    @classmethod
    def from_settings(cls, settings: Settings, chains: Sequence[ChainConfig]) -> Context:
        return cls(
            chains=tuple(chains),
            rates=rate_provider(settings, chains),
            signer_key=settings.intent_signer_key,
            fee_bps=settings.fee_bps,
            spread_bps=settings.spread_bps,
            rate_max_age_s=settings.rate_max_age_s,
            quote_ttl_s=settings.quote_ttl_s,
        )

    def chains_for(self, mode: str) -> list[ChainConfig]:
        """Live payments use live chains only, test payments the others."""
        return [c for c in self.chains if c.livemode == (mode == "live")]


def rate_provider(settings: Settings, chains: Sequence[ChainConfig]) -> RateProvider:
    """Configured feeds first (one JSON-RPC client per chain), static rates for the rest."""
    static = StaticRates(parse_rates(settings.fx_rates))
    feeds = parse_feeds(settings.fx_feeds)
    if not feeds:
        return Crossed(static)
    by_name = {c.name: c for c in chains}
    clients: dict[str, RpcClient] = {}
    routes: dict[tuple[str, str], RateProvider] = {}
    for (base, quote), (chain_name, address) in feeds.items():
        chain = by_name.get(chain_name)
        if chain is None or not chain.rpc_urls:
            raise ValueError(f"STABLEGATE_FX_FEEDS: {base}/{quote} reads chain {chain_name!r}, which is not configured")
        if chain_name not in clients:
            clients[chain_name] = RpcClient(chain.name, chain.rpc_urls)
        routes[base, quote] = ChainlinkFeed(clients[chain_name], address, base, quote)
    return Crossed(Routed(routes, static))


def parse_feeds(text: str) -> dict[tuple[str, str], tuple[str, str]]:
    """ "USDC/USD@base:0xabc…" → {("USDC", "USD"): ("base", "0xabc…")}."""
    feeds: dict[tuple[str, str], tuple[str, str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        pair, _, where = item.partition("@")
        base, _, quote = pair.partition("/")
        chain, _, address = where.partition(":")
        if not (base and quote and chain and ADDRESS.fullmatch(address)):
            raise ValueError(f"STABLEGATE_FX_FEEDS: {item!r} is not BASE/QUOTE@chain:0xaddress")
        feeds[base.strip(), quote.strip()] = (chain.strip(), address.lower())
    return feeds


def parse_rates(text: str) -> dict[tuple[str, str], Decimal]:
    """ "USDC/USD=1,DAI/EUR=0.92" → {("USDC", "USD"): 1, …}."""
    rates: dict[tuple[str, str], Decimal] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        pair, _, value = item.partition("=")
        base, _, quote = pair.partition("/")
        rates[base.strip(), quote.strip()] = Decimal(value.strip())
    return rates


# --- create ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    chain: ChainConfig
    token: TokenConfig


async def create(session: AsyncSession, principal: Principal, params: PaymentCreate, ctx: Context) -> Payment:
    now = dt.datetime.now(dt.UTC)
    scale = currency_scale(ctx, params.currency, principal.mode)
    amount = parse_amount(params.amount, scale)
    merchant = await repository.merchant_settings(session, principal.merchant_id, principal.mode)
    choices = _choices(principal, params, ctx, merchant.accepted)
    spread_bps = ctx.spread_bps if merchant.spread_bps is None else merchant.spread_bps
    schedules = merchant.fee_schedules
    payment_id = new_id(PREFIX)
    expires_at = now + dt.timedelta(seconds=params.expires_in_s)
    quote_ttl_s = min(ctx.quote_ttl_s, params.expires_in_s)
    options = []
    for position, choice in enumerate(choices):
        param = f"accepted[{position}][asset]"
        rate = await _rate(ctx, choice.token.symbol, params.currency, now, param, defaults=not params.accepted)
        quote = quotes.quote(amount, scale, rate, spread_bps, choice.token.decimals, quote_ttl_s, now)
        options.append(_option(payment_id, position, choice, quote, rate, schedules, ctx))
    await _instructions(session, payment_id, choices, options, schedules, ctx)
    row = await repository.insert_payment(
        session,
        {
            "id": payment_id,
            "merchant_id": principal.merchant_id,
            "mode": principal.mode,
            "amount": amount,
            "currency": params.currency,
            "currency_scale": scale,
            "description": params.description,
            "metadata": params.metadata or {},
            "reference": params.reference,
            "success_url": params.success_url,
            "cancel_url": params.cancel_url,
            "expires_at": expires_at,
        },
        options,
    )
    view = views.payment(row, options, [], {})
    await _emit(session, row, ["payment.created"], view)
    metrics.PAYMENTS_CREATED.labels(principal.mode).inc()
    return view


def currency_scale(ctx: Context, currency: str, mode: str) -> int:
    if currency in FIAT_SCALES:
        return FIAT_SCALES[currency]
    decimals = {t.decimals for c in ctx.chains_for(mode) for t in c.tokens if t.symbol == currency}
    if len(decimals) != 1:
        # None configured, or one symbol with different decimals on different chains.
        raise InvalidRequest(
            f"Unsupported currency {currency}: use one of {', '.join(sorted(FIAT_SCALES))} or a configured token.",
            param="currency",
            code="currency_unsupported",
        )
    return decimals.pop()


# Enough digits for any amount the schemas let through (30 + 36) at any token scale.
_EXACT = DecimalContext(prec=200, traps=[Inexact, InvalidOperation])


def parse_amount(text: str, scale: int) -> int:
    """ "25.00" at scale 2 → 2500; more decimals than the currency has is an error, not a rounding."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidRequest("amount must be a decimal string.", param="amount", code="parameter_invalid") from None
    # Exact: at the default 28 digits, scaleb rounds a long amount ("1.0…01", 31 digits)
    # before the check below could see its extra decimals.
    units = value.scaleb(scale, context=_EXACT)
    if units != units.to_integral_value():
        raise InvalidRequest(
            f"amount has more than {scale} decimal places for this currency.", param="amount", code="parameter_invalid"
        )
    if units <= 0:
        raise InvalidRequest("amount must be positive.", param="amount", code="parameter_invalid")
    if value > MAX_AMOUNT_MAJOR:
        raise InvalidRequest(f"amount must be at most {MAX_AMOUNT_MAJOR}.", param="amount", code="parameter_invalid")
    return int(units)


def _choices(principal: Principal, params: PaymentCreate, ctx: Context, accepted: Sequence[str]) -> list[_Choice]:
    available = ctx.chains_for(principal.mode)
    if params.accepted is None:
        wanted = set(accepted) or None
        choices = [
            _Choice(c, t) for c in available for t in c.tokens if wanted is None or f"{c.name}:{t.symbol}" in wanted
        ]
        if not choices:
            raise InvalidRequest(
                f"No chain is configured for {principal.mode} mode.", param="accepted", code="chain_unsupported"
            )
        return choices[:20]
    choices = []
    for i, item in enumerate(params.accepted):
        chain = next((c for c in available if c.name == item.chain), None)
        if chain is None:
            names = ", ".join(c.name for c in available) or "none"
            raise InvalidRequest(
                f"Unsupported chain {item.chain} in {principal.mode} mode (configured: {names}).",
                param=f"accepted[{i}][chain]",
                code="chain_unsupported",
            )
        token = next((t for t in chain.tokens if t.symbol == item.asset), None)
        if token is None:
            raise InvalidRequest(
                f"Unsupported asset {item.asset} on {chain.name}.",
                param=f"accepted[{i}][asset]",
                code="asset_unsupported",
            )
        if any(c.chain is chain and c.token is token for c in choices):
            raise InvalidRequest(
                f"{chain.name}:{token.symbol} is listed twice.", param=f"accepted[{i}]", code="parameter_invalid"
            )
        choices.append(_Choice(chain, token))
    return choices


async def _rate(ctx: Context, token: str, currency: str, now: dt.datetime, param: str, defaults: bool) -> Rate:
    """The checked rate for an option (`param` names it). With the merchant's default
    options (`defaults`), a pair no rate serves is the price's `currency`'s fault: the
    client never named the option."""
    if token == currency:
        return Rate(token, currency, Decimal(1), now, "identity")
    try:
        return checked(await ctx.rates.rate(token, currency), ctx.rate_max_age_s, now)
    except RateUnavailable as exc:
        message = f"No usable rate for {token}/{currency}: {exc}."
        if exc.reason == "rate_unavailable":  # the source is down: retry later, not fix the request
            log.warning("payments.rate_unavailable", pair=f"{token}/{currency}", detail=str(exc))
            raise ServiceUnavailable(message, param=param, code=exc.reason, headers={"Retry-After": "5"}) from None
        unknown_currency = defaults and exc.reason == "rate_unknown"
        raise InvalidRequest(message, param="currency" if unknown_currency else param, code=exc.reason) from None


def fee_schedule(schedules: Sequence[Any], rail: str, asset: str, default_bps: int) -> FeeSchedule:
    """The most specific of the merchant's schedules: (rail, asset), (rail, *), (*, asset), (*, *)."""
    for want in ((rail, asset), (rail, "*"), ("*", asset), ("*", "*")):
        row = next((s for s in schedules if (s["rail"], s["asset"]) == want), None)
        if row is not None:
            maximum = None if row["maximum"] is None else int(row["maximum"])
            return FeeSchedule(row["bps"], int(row["fixed"]), int(row["minimum"]), maximum)
    return FeeSchedule(default_bps)


def _option(
    payment_id: str,
    position: int,
    choice: _Choice,
    quote: quotes.Quote,
    rate: Rate,
    schedules: Sequence[Any],
    ctx: Context,
) -> dict[str, Any]:
    # The deposit rail's fee terms are fixed now, with the quote: a schedule changed
    # later does not reprice a payment the payer is already paying.
    schedule = fee_schedule(schedules, "deposit_address", choice.token.asset, ctx.fee_bps)
    return {
        "payment_id": payment_id,
        "position": position,
        "chain_id": choice.chain.chain_id,
        "chain": choice.chain.name,
        "symbol": choice.token.symbol,
        "asset": choice.token.asset,
        "token": choice.token.address,
        "decimals": choice.token.decimals,
        "token_amount": quote.token_units,
        "rate": rate.value,
        "rate_source": rate.source,
        "rate_as_of": rate.as_of,
        "spread_bps": quote.spread_bps,
        "quote_expires_at": quote.expires_at,
        "fee_bps": schedule.bps,
        "fee_fixed": schedule.fixed,
        "fee_minimum": schedule.minimum,
        "fee_maximum": schedule.maximum,
        "deposit_address": None,
        "intent_id": None,
        "intent": None,
    }


async def _instructions(
    session: AsyncSession,
    payment_id: str,
    choices: Sequence[_Choice],
    options: list[dict[str, Any]],
    schedules: Sequence[Any],
    ctx: Context,
) -> None:
    """Per chain: one deposit address (watched from this transaction on) and, where the
    chain has our router, one signed intent per option (owner `pay_…:position`)."""
    for chain in {c.chain.chain_id: c.chain for c in choices}.values():
        mine = [(c, o) for c, o in zip(choices, options, strict=True) if c.chain is chain]
        signs = chain.router is not None and chain.treasury is not None and chain.fee_recipient is not None
        intents = (
            [(f"{payment_id}:{o['position']}", _terms(chain, c.token, o, schedules, ctx)) for c, o in mine]
            if signs and ctx.signer_key is not None
            else []
        )
        address, signed = await rails.create_payment_instructions(session, chain, payment_id, intents, ctx.signer_key)
        for _, option in mine:
            option["deposit_address"] = address
        for (_, option), intent in zip(mine, signed, strict=False):
            option["intent_id"] = "0x" + intent.intent.id.hex()
            option["intent"] = views.intent_json(intent)


def _terms(
    chain: ChainConfig, token: TokenConfig, option: dict[str, Any], schedules: Sequence[Any], ctx: Context
) -> IntentTerms:
    assert chain.treasury is not None and chain.fee_recipient is not None
    amount = option["token_amount"]
    return IntentTerms(
        token=token.address,
        amount=amount,
        fee=fee(amount, fee_schedule(schedules, "contract", token.asset, ctx.fee_bps)),
        recipient=chain.treasury,
        fee_recipient=chain.fee_recipient,
        deadline_s=int(option["quote_expires_at"].timestamp()),
    )


# --- merchant settings -------------------------------------------------------------------

RAILS = ("contract", "deposit_address", "payout", "*")


async def set_profile(
    session: AsyncSession, merchant_id: str, mode: str, *, spread_bps: int, accepted: Sequence[str] = ()
) -> None:
    """The merchant's FX spread and default accepted options ('chain:SYMBOL'; empty: all)."""
    if not 0 <= spread_bps <= quotes.MAX_SPREAD_BPS:
        raise InvalidRequest(f"spread_bps must be 0 to {quotes.MAX_SPREAD_BPS}.", param="spread_bps")
    for i, item in enumerate(accepted):
        chain, _, symbol = item.partition(":")
        if not chain or not symbol:
            raise InvalidRequest("accepted entries look like 'base:USDC'.", param=f"accepted[{i}]")
    await repository.upsert_profile(session, merchant_id, mode, spread_bps, list(accepted))


async def set_fee_schedule(
    session: AsyncSession,
    merchant_id: str,
    mode: str,
    *,
    rail: str,
    asset: str,
    bps: int,
    fixed: int = 0,
    minimum: int = 0,
    maximum: int | None = None,
) -> None:
    """A fee schedule for (rail, asset); '*' matches any. Fixed amounts are base units of
    `asset`, so they need a named asset."""
    if rail not in RAILS:
        raise InvalidRequest(f"rail must be one of {', '.join(RAILS)}.", param="rail")
    try:
        FeeSchedule(bps, fixed, minimum, maximum)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid fee schedule: {exc}.", param="bps") from None
    if asset == "*" and (fixed or minimum or maximum is not None):
        raise InvalidRequest("Fixed, minimum and maximum fees need a named asset.", param="asset")
    values = {"rail": rail, "asset": asset, "bps": bps, "fixed": fixed, "minimum": minimum, "maximum": maximum}
    await repository.upsert_fee_schedule(session, merchant_id, mode, values)


# --- read --------------------------------------------------------------------------------


async def get(session: AsyncSession, principal: Principal, payment_id: str, *, for_update: bool = False) -> Any:
    # A malformed id (a NUL byte included) is nobody's payment: answer without asking the database.
    row = None
    if is_valid_id(payment_id, PREFIX):
        row = await repository.get(session, principal.merchant_id, principal.mode, payment_id, for_update=for_update)
    if row is None:
        # The same answer whether the id belongs to another merchant or mode or to nobody.
        raise NotFound(f"No such payment: '{payment_id[:64]}'.", param="id")
    return row


async def payout_fee_schedule(
    session: AsyncSession, merchant_id: str, mode: str, asset: str, default_bps: int
) -> FeeSchedule:
    """The merchant's 'payout' schedule for `asset` (or any asset); never a payment rail's."""
    merchant = await repository.merchant_settings(session, merchant_id, mode)
    payout_rows = [s for s in merchant.fee_schedules if s["rail"] == "payout"]
    return fee_schedule(payout_rows, "payout", asset, default_bps)


async def payout_fee_schedules(
    session: AsyncSession, merchant_ids: Sequence[str], mode: str, asset: str, default_bps: int
) -> dict[str, FeeSchedule]:
    """`payout_fee_schedule` for many merchants in one round trip."""
    by_merchant: dict[str, list[Any]] = {m: [] for m in merchant_ids}
    for row in await repository.fee_schedules_of(session, merchant_ids, mode, "payout"):
        by_merchant[row["merchant_id"]].append(row)
    return {m: fee_schedule(rows, "payout", asset, default_bps) for m, rows in by_merchant.items()}


@dataclass(frozen=True)
class Received:
    """Confirmed money of one payment in one token (what a refund may return)."""

    chain_id: int
    chain: str
    symbol: str
    asset: str
    token: str
    decimals: int
    amount: int  # base units, fee included


async def lock_received(session: AsyncSession, principal: Principal, payment_id: str) -> tuple[Any, list[Received]]:
    """The caller's payment, locked until commit (refunds of one payment serialise on it),
    and what it has received, confirmed, per token."""
    row = await get(session, principal, payment_id, for_update=True)
    confirmed = {r["position"]: int(r["confirmed"]) for r in await repository.totals(session, payment_id)}
    received: dict[tuple[int, str], Received] = {}
    for o in await repository.options(session, [payment_id]):
        amount = confirmed.get(o["position"], 0)
        key = (int(o["chain_id"]), o["asset"])
        if amount > 0:
            earlier = received.get(key)
            total = amount + (earlier.amount if earlier else 0)
            received[key] = Received(
                int(o["chain_id"]), o["chain"], o["symbol"], o["asset"], o["token"], int(o["decimals"]), total
            )
    return row, list(received.values())


async def retrieve(session: AsyncSession, principal: Principal, payment_id: str) -> Payment:
    return (await render(session, [await get(session, principal, payment_id)]))[0]


async def render(session: AsyncSession, rows: Sequence[Any], options: Sequence[Any] | None = None) -> list[Payment]:
    """Payments as the API shows them: three queries for any number of rows (two when
    the caller already read their options, which never change after creation)."""
    ids = [r["id"] for r in rows]
    if options is None:
        options = await repository.options(session, ids)
    receipts = await repository.receipts(session, ids)
    heights = await chains.followed_heights(session, sorted({o["chain_id"] for o in options}))
    return [
        views.payment(
            row,
            [o for o in options if o["payment_id"] == row["id"]],
            [r for r in receipts if r["payment_id"] == row["id"]],
            heights,
        )
        for row in rows
    ]


async def list_page(
    session: AsyncSession, principal: Principal, page: PageRequest, filters: dict[str, Any]
) -> Page[Payment]:
    rows = await repository.list_page(session, principal.merchant_id, principal.mode, page, filters)
    return Page(data=await render(session, rows.data), has_more=rows.has_more)


# --- cancel and expire -------------------------------------------------------------------


async def cancel(session: AsyncSession, principal: Principal, payment_id: str) -> Payment:
    row = await get(session, principal, payment_id, for_update=True)
    try:
        return await _apply(session, row, Cancel())
    except InvalidTransition as exc:
        raise InvalidRequest(
            f"This payment is {exc.status}: only a payment that requires payment can be canceled.",
            param="id",
            code="payment_unexpected_state",
        ) from None


async def accept_late(session: AsyncSession, principal: Principal, payment_id: str) -> Payment:
    """Keep late money: mined after the payment's expiry or sent once it was canceled
    (the other way to settle it is a refund). Accepting again changes nothing."""
    row = await get(session, principal, payment_id, for_update=True)
    try:
        return await _apply(session, row, AcceptLate())
    except InvalidTransition:
        raise InvalidRequest(
            "Only a payment flagged late (money mined after its expiry, or arriving once it had expired or "
            "been canceled) can be accepted.",
            param="id",
            code="payment_unexpected_state",
        ) from None


async def expire_due(session: AsyncSession, now: dt.datetime | None = None) -> int:
    """Expire up to EXPIRE_BATCH open payments whose every accepted chain the follower
    has had to its head EXPIRY_GRACE_S or more past their expiry; the caller commits. So
    money mined before the expiry is seen first, however far the follower lagged (else
    on-time money would be flagged late), the grace covering a block's way to our node.
    Money mined after it expires the payment itself, by the block's time (receipts.py),
    so waiting costs only a later `payment.expired`. A chain not followed for
    EXPIRY_MAX_WAIT_S holds its payments no longer: they expire, and money found later is
    late (credited, for the merchant to accept)."""
    now = now or dt.datetime.now(dt.UTC)
    grace, waited_out_at = _expiry_window(now)
    rows = await repository.due_to_expire(session, now, grace, waited_out_at, EXPIRE_BATCH)
    # Locked now. A reorg's rewind that committed after the query's snapshot (orphaning
    # money, clearing the watermark) shows in a fresh statement, not in the locked rows'
    # re-check, which reads the other tables as of the snapshot.
    followed = await repository.followed_past_expiry(session, [r["id"] for r in rows], grace, waited_out_at)
    expired = 0
    for row in rows:
        if row["id"] in followed:
            expired += bool(await _apply_expiry(session, row))
    return expired


async def expire_past_block(session: AsyncSession, row: Any, chain_id: int, now: dt.datetime | None = None) -> Any:
    """Money in a block of `chain_id` mined at or after the locked payment's expiry: the
    chain itself has passed it (blocks come in order), so expire the payment now if its
    other chains were followed past it too (else on-time money there, not yet seen,
    would be taken as late); the updated row."""
    grace, waited_out_at = _expiry_window(now or dt.datetime.now(dt.UTC))
    if row["id"] in await repository.followed_past_expiry(session, [row["id"]], grace, waited_out_at, chain_id):
        await _apply_expiry(session, row)
    return await repository.lock(session, row["id"])


def _expiry_window(now: dt.datetime) -> tuple[dt.timedelta, dt.datetime]:
    return dt.timedelta(seconds=EXPIRY_GRACE_S), now - dt.timedelta(seconds=EXPIRY_MAX_WAIT_S)


async def _apply_expiry(session: AsyncSession, row: Any) -> bool:
    view = await _apply(session, row, Expire())
    return view.status == "expired" and row["status"] != "expired"


async def _apply(session: AsyncSession, row: Any, happening: Expire | Cancel | AcceptLate) -> Payment:
    # Only an expiring payment that has money needs its totals (expirable() reads them);
    # an unpaid one has none, and cancel and accept do not depend on them.
    if isinstance(happening, Expire) and row["status"] == "processing":
        state = (await _totals(session, row))[0]
    else:
        state = _state(row, due=1)
    new, events = transition(state, happening)
    if not events:
        return (await render(session, [row]))[0]
    updated = await repository.update_state(session, row["id"], _columns(row, new, int(row["amount_received"])))
    view = (await render(session, [updated]))[0]
    await _emit(session, updated, events, view)
    return view


# --- receipts ----------------------------------------------------------------------------


async def refresh(
    session: AsyncSession, row: Any, *, needs_review: bool = False, late_arrival: bool = False, late_money: bool = False
) -> None:
    """After a receipt changed: recompute what was paid, transition, record the events.
    `late_money`: the change is late money seen (receipts.py decides); `late_arrival`: a new
    receipt of it (not a transfer mined again after a reorg)."""
    current, options = await _totals(session, row)
    received = current.confirmed * int(row["amount"]) // current.due
    totals = Receipts(
        current.seen,
        current.confirmed,
        late_arrival=late_arrival,
        late_money=late_money,
        late_seen=current.late_seen,
        late_confirmed=current.late_confirmed,
    )
    new, events = transition(current, totals)
    if needs_review and not row["needs_review"]:
        events.append("payment.needs_review")
    columns = _columns(row, new, received) | {"needs_review": row["needs_review"] or needs_review}
    updated = await repository.update_state(session, row["id"], columns)
    if events:
        await _emit(session, updated, events, (await render(session, [updated], options))[0])


async def _totals(session: AsyncSession, row: Any) -> tuple[PaymentState, list[Any]]:
    """The payment's state with its on-chain totals, and its options. Totals compare
    fractions of each option's quote on a common denominator (`due`): a payer may pay
    part in one token and the rest in another, and integers must stay exact."""
    options = await repository.options(session, [row["id"]])
    totals = {t["position"]: t for t in await repository.totals(session, row["id"])}
    due = math.lcm(*(int(o["token_amount"]) for o in options))

    def common(column: str) -> int:
        return sum(int(t[column]) * (due // int(options[p]["token_amount"])) for p, t in totals.items())

    state = replace(
        _state(row, due),
        seen=common("seen"),
        confirmed=common("confirmed"),
        late_seen=common("late_seen"),
        late_confirmed=common("late_confirmed"),
    )
    return state, options


def _state(row: Any, due: int) -> PaymentState:
    return PaymentState(
        status=row["status"],
        due=due,
        paid=row["paid"],
        late=row["late"],
        late_accepted=row["late_accepted_at"] is not None,
    )


def _columns(row: Any, new: PaymentState, received: int) -> dict[str, Any]:
    return {
        "status": new.status,
        "paid": new.paid,
        "late": new.late,
        "late_accepted": new.late_accepted,
        "needs_review": row["needs_review"],
        "amount_received": received,
    }


async def _emit(session: AsyncSession, row: Any, events: Sequence[str], view: Payment) -> None:
    data = view.model_dump(mode="json")
    for event_type in events:
        await webhooks.emit(
            session, merchant_id=row["merchant_id"], mode=row["mode"], type=event_type, object_id=row["id"], data=data
        )
        metrics.PAYMENT_EVENTS.labels(event_type).inc()
        log.info("payment.event", type=event_type, payment_id=row["id"], status=view.status, paid=view.paid)
