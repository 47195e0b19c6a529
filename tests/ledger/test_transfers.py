"""Transfers against the real database: idempotency, linked batches, two-phase, flags,
immutability, and bad input that must write nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from stablegate.db import Database
from stablegate.errors import StablegateError
from stablegate.ledger import service as ledger
from stablegate.ledger.models import LedgerTransfer
from stablegate.ledger.service import Balance, Transfer
from stablegate.observability import metrics
from tests.ledger.conftest import Book


async def post(db: Database, *transfers: Transfer) -> list[ledger.TransferResult]:
    async with db.session() as session:
        return await ledger.create_transfers(session, list(transfers))


async def snapshot(db: Database, book: Book) -> tuple[int, list[Balance]]:
    async with db.session() as session:
        count = await session.scalar(select(func.count()).select_from(LedgerTransfer))
        balances = [await ledger.balance(session, a.id) for a in (book.cash, book.merchant, book.fees, book.usdc)]
    return int(count or 0), balances


def pay(book: Book, tid: str, amount: int = 1000) -> Transfer:
    """A customer payment: cash in, owed to the merchant."""
    return Transfer(id=tid, debit_account=book.cash.id, credit_account=book.merchant.id, asset="USD", amount=amount)


async def test_idempotent_by_id(db: Database, book: Book) -> None:
    first = await post(db, pay(book, f"pay-{book.cash.id}"))
    again = await post(db, pay(book, f"pay-{book.cash.id}"))
    assert first[0].created and not again[0].created
    assert again[0].public_id == first[0].public_id
    async with db.session() as session:
        assert (await ledger.balance(session, book.merchant.id)).credits_posted == 1000


async def test_linked_batch_is_all_or_nothing(db: Database, book: Book) -> None:
    k = book.cash.id
    await post(db, pay(book, f"seed-{k}", 100))
    before = await snapshot(db, book)
    fee = Transfer(id=f"fee-{k}", debit_account=book.merchant.id, credit_account=book.fees.id, asset="USD", amount=30)
    overdraw = Transfer(
        id=f"big-{k}", debit_account=book.merchant.id, credit_account=book.cash.id, asset="USD", amount=500
    )
    with pytest.raises(StablegateError) as err:
        await post(db, pay(book, f"p2-{k}", 100), fee, overdraw)
    assert err.value.code == "exceeds_credits"
    assert await snapshot(db, book) == before
    results = await post(db, pay(book, f"p2-{k}", 100), fee)
    assert [r.created for r in results] == [True, True]


async def test_two_phase_post_partial_void_and_expiry(db: Database, book: Book) -> None:
    k = book.cash.id
    await post(db, pay(book, f"fund-{k}", 1000))
    hold = Transfer(
        id=f"hold-{k}",
        debit_account=book.merchant.id,
        credit_account=book.cash.id,
        asset="USD",
        amount=600,
        kind="pending",
    )
    await post(db, hold)
    async with db.session() as session:
        reserved = await ledger.balance(session, book.merchant.id)
    assert reserved.debits_pending == 600 and reserved.credit_balance_available == 400
    await post(db, Transfer(id=f"hold-post-{k}", kind="post", pending_id=f"hold-{k}", amount=250))
    async with db.session() as session:
        settled = await ledger.balance(session, book.merchant.id)
    assert settled == Balance(debits_posted=250, credits_posted=1000, debits_pending=0, credits_pending=0)

    second = Transfer(
        id=f"hold2-{k}",
        debit_account=book.merchant.id,
        credit_account=book.cash.id,
        asset="USD",
        amount=100,
        kind="pending",
    )
    await post(db, second, Transfer(id=f"hold2-void-{k}", kind="void", pending_id=f"hold2-{k}"))
    with pytest.raises(StablegateError) as err:
        await post(db, Transfer(id=f"hold2-post-{k}", kind="post", pending_id=f"hold2-{k}"))
    assert err.value.code == "pending_transfer_already_resolved"

    short = Transfer(
        id=f"short-{k}",
        debit_account=book.merchant.id,
        credit_account=book.cash.id,
        asset="USD",
        amount=50,
        kind="pending",
        timeout_s=1,
    )
    await post(db, short)
    await asyncio.sleep(1.1)
    with pytest.raises(StablegateError) as err:
        await post(db, Transfer(id=f"short-post-{k}", kind="post", pending_id=f"short-{k}"))
    assert err.value.code == "pending_transfer_expired"
    async with db.session() as session:
        assert await ledger.expire_pending(session) >= 1
        expired = await ledger.balance(session, book.merchant.id)
        assert await ledger.expire_pending(session) == 0, "each pending expires once"
    assert expired.debits_pending == 0
    async with db.session() as session:
        assert await ledger.journal_balance(session, book.merchant.id) == expired


BAD: list[tuple[str, Callable[[Book], Transfer], str]] = [
    (
        "unknown account",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=987654321, asset="USD", amount=1),
        "account_not_found",
    ),
    (
        "asset mismatch",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=b.usdc.id, asset="USD", amount=1),
        "asset_mismatch",
    ),
    (
        "wrong asset on both",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USDC.base", amount=1),
        "asset_mismatch",
    ),
    (
        "zero amount",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=0),
        "invalid_amount",
    ),
    (
        "negative amount",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=-5),
        "invalid_amount",
    ),
    (
        "oversized amount",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=2**256),
        "invalid_amount",
    ),
    (
        "float amount",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1.5),
        "invalid_request",
    ),  # type: ignore[arg-type]
    (
        "metadata not an object",
        lambda b: Transfer(
            id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1, metadata=["a"]
        ),
        "invalid_request",
    ),  # type: ignore[arg-type]
    (
        "same account",
        lambda b: Transfer(id="x", debit_account=b.cash.id, credit_account=b.cash.id, asset="USD", amount=1),
        "same_account",
    ),
    (
        "overdraw flagged",
        lambda b: Transfer(id="x", debit_account=b.merchant.id, credit_account=b.cash.id, asset="USD", amount=10**12),
        "exceeds_credits",
    ),
    (
        "post unknown pending",
        lambda b: Transfer(id="x", kind="post", pending_id="no-such-pending"),
        "pending_transfer_not_found",
    ),
    (
        "post a posted transfer",
        lambda b: Transfer(id="x", kind="post", pending_id=f"seed-{b.cash.id}"),
        "pending_transfer_not_found",
    ),
    (
        "empty id",
        lambda b: Transfer(id="", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1),
        "invalid_request",
    ),
    (
        "metadata integer beyond 64 bits",
        lambda b: Transfer(
            id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1, metadata={"n": 2**70}
        ),
        "invalid_request",
    ),
    (
        "metadata key not a string",
        lambda b: Transfer(
            id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1, metadata={1: "one"}
        ),
        "invalid_request",
    ),
    (
        "timeout on posted",
        lambda b: Transfer(
            id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1, timeout_s=5
        ),
        "invalid_request",
    ),
]


def _plain(b: Book, **changes: object) -> Transfer:
    return Transfer(id="x", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1)._replace(
        **changes
    )


# Wrong types and fields a transfer cannot honour: refused naming the field, before the
# database (which answered some of them with a raw driver error, a 500).
BAD_FIELDS: list[tuple[str, Callable[[Book], Transfer], str]] = [
    ("account id beyond bigint", lambda b: _plain(b, debit_account=2**63), "debit_account"),
    ("account id a string", lambda b: _plain(b, credit_account=str(b.fees.id)), "credit_account"),
    ("account id a bool", lambda b: _plain(b, debit_account=True), "debit_account"),
    ("timeout in fractions", lambda b: _plain(b, kind="pending", timeout_s=1.5), "timeout_s"),
    ("code a float", lambda b: _plain(b, code=1.0), "code"),
    ("code a bool", lambda b: _plain(b, code=True), "code"),
    ("id not a string", lambda b: _plain(b, id=7), "id"),
    ("NUL in the id", lambda b: _plain(b, id="a\x00b"), "id"),
    ("NUL in metadata", lambda b: _plain(b, metadata={"note": "a\x00b"}), "metadata"),
    ("asset not text", lambda b: _plain(b, asset=10), "asset"),  # was a driver DataError (a 500)
    ("the expiry job's id", lambda b: _plain(b, id=f"expire:pending-{b.cash.id}"), "id"),
    ("void of part", lambda b: Transfer(id="x", kind="void", pending_id=f"seed-{b.cash.id}", amount=30), "amount"),
    (
        "post to other accounts",
        lambda b: Transfer(id="x", kind="post", pending_id=f"seed-{b.cash.id}", debit_account=b.fees.id),
        "debit_account",
    ),
    (
        "post in another asset",
        lambda b: Transfer(id="x", kind="post", pending_id=f"seed-{b.cash.id}", asset="EUR"),
        "asset",
    ),
]


@pytest.mark.parametrize("standalone", [False, True], ids=["in a session", "ledger.post"])
@pytest.mark.parametrize(("label", "make", "param"), BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
async def test_bad_fields_are_named_and_write_nothing(
    db: Database, book: Book, label: str, make: Callable[[Book], Transfer], param: str, standalone: bool
) -> None:
    await post(db, pay(book, f"seed-{book.cash.id}", 500))
    before = await snapshot(db, book)
    with pytest.raises(StablegateError) as err:
        await (ledger.post(db, [make(book)]) if standalone else post(db, make(book)))
    assert (err.value.status_code, err.value.param) == (400, param), err.value.message
    assert await snapshot(db, book) == before


async def test_bad_accounts_are_refused_naming_the_field(db: Database) -> None:
    async with db.session() as session:
        await ledger.define_asset(session, "USD", 2)
        cases = [
            (dict(code="x" * 201, asset="USD", type="asset"), "code"),
            (dict(code="a\x00b", asset="USD", type="asset"), "code"),
            (dict(code="ok-flags", asset="USD", type="asset", flags=4), "flags"),
            (dict(code="ok-flags", asset="USD", type="asset", flags=True), "flags"),
            (dict(code="ok-mode", asset="USD", type="asset", mode="prod"), "mode"),
            (dict(code="ok-type", asset="USD", type="cash"), "type"),
        ]
        for kwargs, param in cases:
            for opener in (ledger.open_account, _open_one):
                with pytest.raises(StablegateError) as err:
                    await opener(session, **kwargs)  # type: ignore[operator]
                assert (err.value.status_code, err.value.param) == (400, param), (opener, kwargs)


async def _open_one(session: object, **kwargs: object) -> object:
    return await ledger.open_accounts(session, [ledger.AccountSpec(**kwargs)])  # type: ignore[arg-type]


async def test_assets_are_refused_clearly(db: Database) -> None:
    """One contract has one code; a fiat asset has no contract; a chain slug cannot end
    in "-" (beancount could not parse the commodity); another scale for a code is refused."""
    contract = "0x" + "ab" * 20
    async with db.session() as session:
        await ledger.define_asset(session, "TOK.chain-a", 6, chain_id=7, contract=contract)
        cases = [
            (dict(code="TOK2.chain-a", scale=6, chain_id=7, contract=contract), "contract", "asset_exists"),
            (dict(code="TOK.chain-a", scale=8, chain_id=7, contract=contract), "code", "asset_exists"),
            (dict(code="CHF", scale=2, contract=contract), "contract", "invalid_request"),
            (dict(code="TOK.chain-", scale=6, chain_id=7, contract="0x" + "cd" * 20), "code", "invalid_request"),
            (dict(code="TOK.-chain", scale=6, chain_id=7, contract="0x" + "cd" * 20), "code", "invalid_request"),
            # The same contract in other letters is the same contract; a non-address is refused.
            (
                dict(
                    code="TOK3.chain-a",
                    scale=6,
                    chain_id=7,
                    contract="0x" + "AB" * 20,  # the same contract in capitals
                ),
                "contract",
                "asset_exists",
            ),
            (dict(code="TOK4.chain-a", scale=6, chain_id=7, contract="not an address"), "contract", "invalid_request"),
        ]
        for kwargs, param, code in cases:
            with pytest.raises(StablegateError) as err:
                await ledger.define_asset(session, **kwargs)  # type: ignore[arg-type]
            assert (err.value.status_code, err.value.param, err.value.code) == (400, param, code), kwargs
        assert (await ledger.define_asset(session, "TOK.chain-a", 6, chain_id=7, contract=contract)).scale == 6


@pytest.mark.parametrize(("label", "make", "code"), BAD, ids=[b[0] for b in BAD])
async def test_bad_transfers_write_nothing(
    db: Database, book: Book, label: str, make: Callable[[Book], Transfer], code: str
) -> None:
    await post(db, pay(book, f"seed-{book.cash.id}", 500))
    before = await snapshot(db, book)
    with pytest.raises(StablegateError) as err:
        await post(db, make(book))
    assert err.value.code == code
    assert await snapshot(db, book) == before


def hold(book: Book, tid: str, amount: int, timeout_s: int | None = None) -> Transfer:
    """The merchant's funds reserved (a pending payout)."""
    return Transfer(
        id=tid,
        debit_account=book.merchant.id,
        credit_account=book.cash.id,
        asset="USD",
        amount=amount,
        kind="pending",
        timeout_s=timeout_s,
    )


# Whole batches that must be refused with nothing written, through both entry points.
BAD_BATCHES: list[tuple[str, Callable[[Book], list[Transfer]], str]] = [
    # An id twice is a replay of its first occurrence only with the same fields.
    (
        "an id twice, other amount",
        lambda b: [pay(b, "twice", 10), pay(b, "fresh", 1), pay(b, "twice", 20)],
        "transfer_exists_with_different_fields",
    ),
    (
        "an id twice, other metadata",
        lambda b: [pay(b, "twice", 10), pay(b, "twice", 10)._replace(metadata={"order": "2"})],
        "transfer_exists_with_different_fields",
    ),
    (
        "an id twice, metadata true where it was 1",
        lambda b: [pay(b, "twice", 10)._replace(metadata={"n": 1}), pay(b, "twice", 10)._replace(metadata={"n": True})],
        "transfer_exists_with_different_fields",
    ),
    (
        "an id twice in a two-phase batch",
        lambda b: [hold(b, "twice", 10), Transfer(id="twice", kind="void", pending_id="twice")],
        "transfer_exists_with_different_fields",
    ),
    (
        "a stored id with other fields among new transfers",
        lambda b: [pay(b, "fresh", 10), pay(b, f"seed-{b.cash.id}", 499), pay(b, "fresh2", 10)],
        "transfer_exists_with_different_fields",
    ),
    (
        "a balance beyond the ledger's range",
        lambda b: [pay(b, f"huge-{i}", ledger.MAX_AMOUNT) for i in range(9)],  # 9 × 2^256 > 10^78
        "balance_overflow",
    ),
    (
        "a closed account among open ones",
        lambda b: [
            pay(b, "fresh", 10),
            Transfer(id="to-closed", debit_account=b.cash.id, credit_account=b.fees.id, asset="USD", amount=1),
        ],
        "account_closed",
    ),
]


@pytest.mark.parametrize("standalone", [False, True], ids=["in a session", "ledger.post"])
@pytest.mark.parametrize(("label", "make", "code"), BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
async def test_bad_batches_write_nothing(
    db: Database, book: Book, label: str, make: Callable[[Book], list[Transfer]], code: str, standalone: bool
) -> None:
    await post(db, pay(book, f"seed-{book.cash.id}", 500))
    async with db.session() as session:
        await ledger.close_account(session, book.fees.id)
    before = await snapshot(db, book)
    send = ledger.post(db, make(book)) if standalone else post(db, *make(book))
    with pytest.raises(StablegateError) as err:
        await send
    assert err.value.code == code, err.value.message
    assert await snapshot(db, book) == before


async def test_resolving_a_voided_or_expired_pending_writes_nothing(db: Database, book: Book) -> None:
    k = book.cash.id
    await post(db, pay(book, f"fund-{k}", 1000))
    await post(db, hold(book, f"v-{k}", 100), Transfer(id=f"v-void-{k}", kind="void", pending_id=f"v-{k}"))
    await post(db, hold(book, f"e-{k}", 100, timeout_s=1))
    await asyncio.sleep(1.1)
    before = await snapshot(db, book)
    refusals = [
        (Transfer(id=f"v-post-{k}", kind="post", pending_id=f"v-{k}"), "pending_transfer_already_resolved"),
        (Transfer(id=f"v-void2-{k}", kind="void", pending_id=f"v-{k}"), "pending_transfer_already_resolved"),
        (Transfer(id=f"e-post-{k}", kind="post", pending_id=f"e-{k}", amount=10), "pending_transfer_expired"),
    ]
    for transfer, code in refusals:
        for standalone in (False, True):
            with pytest.raises(StablegateError) as err:
                await (ledger.post(db, [transfer]) if standalone else post(db, transfer))
            assert err.value.code == code, (transfer.id, err.value.message)
    assert await snapshot(db, book) == before


async def test_an_account_holding_pending_transfers_cannot_be_closed(db: Database, book: Book) -> None:
    """Closed, it would refuse their release: the reservation could never be posted,
    voided or expired (and the expiry job would fail on it every minute)."""
    k = book.cash.id
    await post(db, pay(book, f"fund-{k}", 1000))
    await post(db, hold(book, f"h-{k}", 100, timeout_s=60))
    for account in (book.merchant, book.cash):  # the debit and the credit side of the pending
        with pytest.raises(StablegateError) as err:
            async with db.session() as session:
                await ledger.close_account(session, account.id)
        assert err.value.code == "account_has_pending_transfers"
    with pytest.raises(DBAPIError) as raw:  # from SQL too
        async with db.session() as session:
            await session.execute(text("UPDATE ledger_accounts SET closed_at = now() WHERE id = :id"), {"id": k})
    assert "holds pending transfers" in str(raw.value)
    await post(db, Transfer(id=f"h-void-{k}", kind="void", pending_id=f"h-{k}"))
    async with db.session() as session:
        await ledger.close_account(session, book.merchant.id)
        await ledger.close_account(session, book.merchant.id)  # closing twice is fine
    with pytest.raises(StablegateError) as err:
        await post(db, hold(book, f"h2-{k}", 1))
    assert err.value.code == "account_closed"


async def test_a_pending_that_cannot_expire_does_not_hold_up_the_others(db: Database, book: Book) -> None:
    """A pending on an account closed before migration 0016 can never be released. It is
    reported, and the other timed-out pending transfers still expire."""
    k = book.cash.id
    await post(db, pay(book, f"x-fund-{k}", 1000))
    stuck = Transfer(f"x-stuck-{k}", book.cash.id, book.fees.id, "USD", 5, kind="pending", timeout_s=1)
    await post(db, stuck, hold(book, f"x-ok-{k}", 7, timeout_s=1))
    async with db.session() as session:  # a close from before 0016 (DDL is transactional: no one else sees it)
        await session.execute(text("ALTER TABLE ledger_accounts DISABLE TRIGGER ledger_accounts_close_without_pending"))
        await session.execute(text("UPDATE ledger_accounts SET closed_at = now() WHERE id = :id"), {"id": book.fees.id})
        await session.execute(text("ALTER TABLE ledger_accounts ENABLE TRIGGER ledger_accounts_close_without_pending"))
    await asyncio.sleep(1.1)
    refused_before = metrics.LEDGER_EXPIRIES_REFUSED._value.get()
    async with db.session() as session:
        await ledger.expire_pending(session)
    async with db.session() as session:
        assert (await ledger.balance(session, book.merchant.id)).debits_pending == 0  # expired
        assert (await ledger.balance(session, book.fees.id)).credits_pending == 5  # stuck, reported
    assert metrics.LEDGER_EXPIRIES_REFUSED._value.get() >= refused_before + 1


async def test_a_pending_with_the_longest_id_expires(db: Database, book: Book) -> None:
    """The expiry's own transfer id is derived from the pending's (a hash), so it fits
    the id column for any pending id; "expire:" + a 128-character id did not, and such a
    pending stayed reserved for ever."""
    k = str(book.cash.id)
    await post(db, pay(book, f"long-fund-{k}", 100))
    long_id = (f"long-{k}-" + "x" * ledger.MAX_TRANSFER_ID_CHARS)[: ledger.MAX_TRANSFER_ID_CHARS]
    await post(db, hold(book, long_id, 40, timeout_s=1))
    await asyncio.sleep(1.1)
    async with db.session() as session:
        await ledger.expire_pending(session)
    async with db.session() as session:
        assert (await ledger.balance(session, book.merchant.id)).debits_pending == 0


async def test_credits_must_not_exceed_debits(db: Database, book: Book) -> None:
    """The other flag: an asset account that may not be credited beyond what it holds."""
    async with db.session() as session:
        vault = await ledger.open_account(
            session, f"t:vault:{book.cash.id}", "USD", "asset", flags=ledger.FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS
        )
    k = book.cash.id
    fill = Transfer(id=f"vf-{k}", debit_account=vault.id, credit_account=book.fees.id, asset="USD", amount=100)
    await post(db, fill)
    before = await snapshot(db, book)
    drain = Transfer(id=f"vd-{k}", debit_account=book.cash.id, credit_account=vault.id, asset="USD", amount=101)
    with pytest.raises(StablegateError) as err:
        await post(db, drain)
    assert err.value.code == "exceeds_debits"
    assert await snapshot(db, book) == before
    await post(db, drain._replace(amount=100))
    async with db.session() as session:
        assert (await ledger.balance(session, vault.id)).debits_posted == 100


async def test_more_than_reserved_and_reuse_with_other_fields(db: Database, book: Book) -> None:
    k = book.cash.id
    await post(db, pay(book, f"f-{k}", 1000))
    hold = Transfer(
        id=f"h-{k}",
        debit_account=book.merchant.id,
        credit_account=book.cash.id,
        asset="USD",
        amount=100,
        kind="pending",
    )
    await post(db, hold)
    before = await snapshot(db, book)
    with pytest.raises(StablegateError) as err:
        await post(db, Transfer(id=f"h-post-{k}", kind="post", pending_id=f"h-{k}", amount=101))
    assert err.value.code == "exceeds_pending_amount"
    with pytest.raises(StablegateError) as err2:
        await post(db, pay(book, f"f-{k}", 999))
    assert err2.value.code == "transfer_exists_with_different_fields"
    assert await snapshot(db, book) == before


# How a replay reaches the database: alone (the single-transfer function), beside a new
# transfer (the plain batch function), beside a post (the stepwise function).
REPLAY_PATHS: dict[str, Callable[[Book, Transfer], list[Transfer]]] = {
    "alone": lambda book, t: [t],
    "plain batch": lambda book, t: [t, pay(book, f"{t.id}-beside")],
    "stepwise batch": lambda book, t: [t, Transfer(id=f"{t.id}-post", kind="post", pending_id=f"{t.id}-other")],
}


@pytest.mark.parametrize("path", REPLAY_PATHS)
async def test_a_replay_must_ask_for_the_same_timeout(db: Database, book: Book, path: str) -> None:
    """The timeout is one of a pending transfer's fields: a replay asking for another (or
    none, or one where there was none) is refused like any other difference (0018)."""
    k = f"{book.cash.id}-{path.replace(' ', '-')}"
    timed, untimed = hold(book, f"timed-{k}", 100, timeout_s=60), hold(book, f"untimed-{k}", 100)
    await post(db, pay(book, f"fund-{k}", 1000), timed, untimed)
    await post(db, hold(book, f"timed-{k}-other", 5), hold(book, f"untimed-{k}-other", 5))
    before = await snapshot(db, book)
    for stored, asked in ((timed, None), (timed, 61), (timed, 90 * 86400), (untimed, 60)):
        replay = hold(book, stored.id, 100, timeout_s=asked)
        with pytest.raises(StablegateError) as err:
            await post(db, *REPLAY_PATHS[path](book, replay))
        assert (err.value.code, err.value.param) == ("transfer_exists_with_different_fields", "id"), (stored, asked)
        assert await snapshot(db, book) == before
    for stored in (timed, untimed):
        results = await post(db, *REPLAY_PATHS[path](book, stored))
        assert not results[0].created


@pytest.mark.parametrize("path", REPLAY_PATHS)
async def test_a_pending_stored_before_0018_replays_whatever_its_timeout(db: Database, book: Book, path: str) -> None:
    """A row from before 0018 has timeout_at but no timeout_s (written here as 0017's
    functions did): a replay with any timeout is compared on the other fields only,
    through each of the three posting functions."""
    k = f"{book.cash.id}-{path.replace(' ', '-')}"
    legacy = hold(book, f"legacy-{k}", 100, timeout_s=60)
    await post(db, pay(book, f"fund-{k}", 1000), hold(book, f"{legacy.id}-other", 5))
    async with db.session() as session:
        await session.execute(
            text(
                "INSERT INTO ledger_transfers (id, public_id, debit_account, credit_account, asset, amount, kind,"
                " timeout_at, code) VALUES (:id, :public_id, :debit, :credit, 'USD', 100, 'pending',"
                " now() + interval '30 days', 0)"  # never due while the suite runs
            ),
            {"id": legacy.id, "public_id": f"txn_legacy{k}", "debit": book.merchant.id, "credit": book.cash.id},
        )
    for asked in (60, 7200):
        results = await post(db, *REPLAY_PATHS[path](book, legacy._replace(timeout_s=asked)))
        assert (results[0].id, results[0].created) == (legacy.id, False)
    with pytest.raises(StablegateError) as err:
        await post(db, *REPLAY_PATHS[path](book, legacy._replace(amount=101)))
    assert err.value.code == "transfer_exists_with_different_fields"


async def test_a_replay_of_a_transfer_stored_without_its_timeout_s_is_compared_on_the_rest(db: Database) -> None:
    """Rows written before 0018 hold timeout_at but no timeout_s: nothing to compare."""
    async with db.session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT ledger_replay_timeout_s(NULL, now(), 60), ledger_replay_timeout_s(NULL, NULL, 60),"
                    " ledger_replay_timeout_s(60, now(), 61), ledger_replay_timeout_s(60, now(), NULL)"
                )
            )
        ).one()
    assert tuple(rows) == (60, None, 60, 60)


async def test_closed_account_refuses_transfers(db: Database, book: Book) -> None:
    async with db.session() as session:
        await ledger.close_account(session, book.fees.id)
    with pytest.raises(StablegateError) as err:
        await post(
            db,
            Transfer(
                id=f"c-{book.cash.id}", debit_account=book.cash.id, credit_account=book.fees.id, asset="USD", amount=1
            ),
        )
    assert err.value.code == "account_closed"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_transfers SET amount = amount + 1",
        "DELETE FROM ledger_transfers",
        "TRUNCATE ledger_transfers CASCADE",
    ],
)
async def test_journal_is_append_only_even_from_sql(db: Database, book: Book, statement: str) -> None:
    await post(db, pay(book, f"a-{book.cash.id}", 1))
    with pytest.raises(DBAPIError) as err:
        async with db.session() as session:
            await session.execute(text(statement))
    assert "append-only" in str(err.value)


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("DELETE FROM ledger_accounts WHERE id = :id", "never deleted"),
        ("UPDATE ledger_accounts SET asset = 'EUR' WHERE id = :id", "never change asset"),
        ("TRUNCATE ledger_accounts CASCADE", "never deleted"),
        (
            # A journal row written around the posting functions still has its accounts
            # checked: the merchant account holds USD, not USDC.
            "INSERT INTO ledger_transfers (id, public_id, debit_account, credit_account, asset, amount, kind, code)"
            " SELECT 'raw', 'raw', :id, id, 'USDC.base', 1, 'posted', 0 FROM ledger_accounts WHERE asset = 'USDC.base'"
            " LIMIT 1",
            "do not hold its asset",
        ),
    ],
)
async def test_accounts_are_permanent_even_from_sql(db: Database, book: Book, statement: str, refusal: str) -> None:
    """Accounts cannot vanish or change asset, which is what lets the journal check its
    accounts without locking them (migration 0004)."""
    before = await snapshot(db, book)
    with pytest.raises(DBAPIError) as err:
        async with db.session() as session:
            await session.execute(text(statement), {"id": book.merchant.id})
    assert refusal in str(err.value)
    assert await snapshot(db, book) == before


async def test_flags_hold_even_from_sql(db: Database, book: Book) -> None:
    with pytest.raises(DBAPIError) as err:
        async with db.session() as session:
            await session.execute(
                text("UPDATE ledger_accounts SET debits_posted = credits_posted + 1 WHERE id = :id"),
                {"id": book.merchant.id},
            )
    assert "debits_must_not_exceed_credits" in str(err.value)


async def test_balance_as_of(db: Database, book: Book) -> None:
    k = book.cash.id
    await post(db, pay(book, f"asof1-{k}", 100))
    async with db.session() as session:
        midpoint = await session.scalar(text("SELECT clock_timestamp()"))
    await post(db, pay(book, f"asof2-{k}", 50))
    async with db.session() as session:
        then = await ledger.balance_as_of(session, book.merchant.id, midpoint)
        now = await ledger.balance(session, book.merchant.id)
    assert then.credits_posted == 100 and now.credits_posted == 150


async def test_balance_as_of_follows_pending_transfers_and_their_resolution(db: Database, book: Book) -> None:
    """As of any moment, pending amounts count until their post, void or expiry."""
    k = book.cash.id

    async def moment() -> object:
        async with db.session() as session:
            return await session.scalar(text("SELECT clock_timestamp()"))

    await post(db, pay(book, f"pa-fund-{k}", 1000))
    await post(db, hold(book, f"pa-h1-{k}", 300), hold(book, f"pa-h2-{k}", 200))
    held = await moment()
    await post(db, Transfer(id=f"pa-post-{k}", kind="post", pending_id=f"pa-h1-{k}", amount=120))
    posted = await moment()
    await post(db, Transfer(id=f"pa-void-{k}", kind="void", pending_id=f"pa-h2-{k}"))
    voided = await moment()
    async with db.session() as session:
        as_of = [await ledger.balance_as_of(session, book.merchant.id, at) for at in (held, posted, voided)]
        now = await ledger.balance(session, book.merchant.id)
    assert [(b.debits_pending, b.debits_posted) for b in as_of] == [(500, 0), (200, 120), (0, 120)]
    assert all(b.credits_posted == 1000 for b in as_of)
    assert as_of[-1] == now


async def test_a_resolution_stamped_before_its_pending_counts_from_the_pending(db: Database, book: Book) -> None:
    """Rows carry their transaction's start time. A post whose transaction began before
    the pending committed is stamped earlier than the pending; as of a moment between the
    two, neither counts (it showed a pending amount of -100)."""
    k = book.cash.id
    await post(db, pay(book, f"early-fund-{k}", 1000))
    async with db.session() as early:
        await early.execute(text("SELECT 1"))  # its now() is taken here
        async with db.session() as session:
            between = await session.scalar(text("SELECT clock_timestamp()"))
        await post(db, hold(book, f"early-h-{k}", 100))
        await ledger.create_transfers(early, [Transfer(id=f"early-post-{k}", kind="post", pending_id=f"early-h-{k}")])
    async with db.session() as session:
        query = text("SELECT id, created_at FROM ledger_transfers WHERE id LIKE :p")
        stamps = {row.id: row.created_at for row in await session.execute(query, {"p": "early-%"})}
        assert stamps[f"early-post-{k}"] < between < stamps[f"early-h-{k}"]
        then = await ledger.balance_as_of(session, book.merchant.id, between)
        now = await ledger.balance(session, book.merchant.id)
    assert (then.debits_pending, then.debits_posted) == (0, 0)
    assert (now.debits_pending, now.debits_posted) == (0, 100)


async def test_standalone_post_is_atomic_and_idempotent(db: Database, book: Book) -> None:
    k = book.cash.id
    first = await ledger.post(db, [pay(book, f"sa-{k}", 40), pay(book, f"sa2-{k}", 2)])
    again = await ledger.post(db, [pay(book, f"sa-{k}", 40)])
    assert [r.created for r in first] == [True, True] and again[0].created is False
    before = await snapshot(db, book)
    overdraw = Transfer(f"sa3-{k}", book.merchant.id, book.cash.id, "USD", 10**9)
    with pytest.raises(StablegateError) as err:
        await ledger.post(db, [pay(book, f"sa4-{k}", 1), overdraw])
    assert err.value.code == "exceeds_credits"
    assert await snapshot(db, book) == before


async def test_batch_answers_each_transfer_in_order_new_replayed_or_twice(db: Database, book: Book) -> None:
    """A batch of new transfers answers from its insert (migration 0012); a batch with a
    replay or an id twice takes the general path. Either way: input order, the stored
    seq and public id, `created` once per new transfer."""
    k = book.cash.id
    fresh = await post(db, *(pay(book, f"ord-{k}-{n}", n + 1) for n in range(5)))
    mixed = await post(db, pay(book, f"ord-{k}-9", 7), pay(book, f"ord-{k}-2", 3), pay(book, f"ord-{k}-9", 7))
    async with db.session() as session:
        stored = {
            t.id: (t.seq, t.public_id)
            for t in (await session.scalars(select(LedgerTransfer).where(LedgerTransfer.id.like(f"ord-{k}-%")))).all()
        }
    assert [(stored[f"ord-{k}-{n}"], True) for n in range(5)] == [((r.seq, r.public_id), r.created) for r in fresh]
    assert [r.id for r in mixed] == [f"ord-{k}-9", f"ord-{k}-2", f"ord-{k}-9"]
    assert [r.created for r in mixed] == [True, False, False]
    assert [(r.seq, r.public_id) for r in mixed] == [stored[r.id] for r in mixed]


@pytest.mark.parametrize("standalone", [False, True], ids=["session", "standalone"])
async def test_a_batch_names_its_bad_account_and_writes_nothing(db: Database, book: Book, standalone: bool) -> None:
    """Batches (two or more transfers) take the set-based function, whose accounts the
    journal's insert trigger checks: an unknown account is account_not_found (the lowest
    unknown id), another asset is asset_mismatch; either way nothing is written."""
    k = book.cash.id

    async def send(*transfers: Transfer) -> None:
        if standalone:
            await ledger.post(db, list(transfers))
        else:
            await post(db, *transfers)

    await send(pay(book, f"bb-seed-{k}-{standalone}", 100), pay(book, f"bb-seed2-{k}-{standalone}", 100))
    before = await snapshot(db, book)
    missing = Transfer(f"bb-miss-{k}", book.cash.id, 10**15 + 7, "USD", 1)
    also_missing = Transfer(f"bb-miss2-{k}", 10**15 + 3, book.fees.id, "USD", 1)
    other_asset = Transfer(f"bb-usdc-{k}", book.cash.id, book.usdc.id, "USD", 1)
    with pytest.raises(StablegateError) as err:
        await send(pay(book, f"bb-1-{k}", 5), missing, other_asset, also_missing)
    assert err.value.code == "account_not_found"
    assert str(10**15 + 3) in str(err.value.body(None))
    assert err.value.param == "debit_account"  # the lowest unknown id, named as a debit
    with pytest.raises(StablegateError) as err:
        await send(missing)
    assert (err.value.code, err.value.param) == ("account_not_found", "credit_account")
    with pytest.raises(StablegateError) as err:
        await send(pay(book, f"bb-2-{k}", 5), other_asset)
    assert err.value.code == "asset_mismatch"
    assert await snapshot(db, book) == before


async def test_account_history_is_cursor_paginated(db: Database, book: Book) -> None:
    from stablegate.kit.pagination import PageRequest

    k = book.cash.id
    made = [(await ledger.post(db, [pay(book, f"hist-{k}-{i}", i + 1)]))[0].public_id for i in range(5)]
    async with db.session() as s:
        first = await ledger.history(s, [book.merchant.id], PageRequest.parse("txn", 3, None, None))
        rest = await ledger.history(s, [book.merchant.id], PageRequest.parse("txn", 3, first.data[-1].public_id, None))
    seen = [t.public_id for t in first.data + rest.data]
    assert seen[:5] == list(reversed(made))
    assert first.has_more is True


@pytest.mark.parametrize(("label", "make", "code"), BAD, ids=[b[0] for b in BAD])
async def test_bad_transfers_through_standalone_post(
    db: Database, book: Book, label: str, make: Callable[[Book], Transfer], code: str
) -> None:
    """The same refusals on `ledger.post`, whose single transfers take the typed path."""
    await ledger.post(db, [pay(book, f"seed-{book.cash.id}", 500)])
    before = await snapshot(db, book)
    with pytest.raises(StablegateError) as err:
        await ledger.post(db, [make(book)])
    assert err.value.code == code
    assert await snapshot(db, book) == before
