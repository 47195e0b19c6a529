"""Journal export for accountants: beancount (bean-check must accept what we write).

Posted movements become transactions (a pending transfer appears only once posted, at its
posted amount); each account gets an `open` and a closing `balance` assertion equal to
its posted balance in the database, so bean-check proves the export adds up."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from stablegate.ledger.models import LedgerAccount, LedgerAsset, LedgerTransfer

_ROOTS = {"asset": "Assets", "liability": "Liabilities", "equity": "Equity", "income": "Income", "expense": "Expenses"}
_UNSAFE = re.compile(r"[^A-Za-z0-9-]")
CHUNK_ROWS = 5000
BEANCOUNT_DIGITS = 28  # the precision of beancount's arithmetic (Python's default decimal context)


def account_name(account: LedgerAccount) -> str:
    """`merchant:mch_01J…:test:available:USDC.base` -> `Liabilities:Merchant:Mch-01J…:…:A42`.

    The trailing `A{id}` keeps names unique whatever sanitising merged."""
    parts = [_UNSAFE.sub("-", p) or "X" for p in account.code.split(":")]
    parts = [p[0].upper() + p[1:] if p[0].isalpha() else "N" + p for p in parts]
    return ":".join([_ROOTS[account.type], *parts, f"A{account.id}"])


def commodity(asset: str) -> str:
    return asset.upper().replace("_", "-")


def quantity(amount: int, scale: int) -> str:
    """Exact fixed-point text (no float, no exponent): 12345, 2 -> '123.45'."""
    if scale == 0:
        return str(amount)
    whole, fraction = divmod(abs(amount), 10**scale)
    return f"{'-' if amount < 0 else ''}{whole}.{fraction:0{scale}d}"


def _string(value: str) -> str:
    """A beancount string's contents: its quote and escape characters and line breaks
    would end or break the string, so they become harmless look-alikes."""
    return value.replace("\\", "/").replace('"', "'").replace("\n", " ").replace("\r", " ")


async def beancount(session: AsyncSession) -> AsyncIterator[str]:
    """Yield the export line by line (bounded memory: the journal is read in chunks).

    `session` must not have begun its transaction: the export reads the accounts and then
    streams the journal in one REPEATABLE READ snapshot, so a transfer committed meanwhile
    appears in neither (at READ COMMITTED it would be in the journal but not in the closing
    balances, and bean-check would fail)."""
    assert not session.in_transaction(), "the export's snapshot begins its transaction"
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    assets = {a.code: a.scale for a in await session.scalars(select(LedgerAsset))}
    accounts = {a.id: a for a in await session.scalars(select(LedgerAccount).order_by(LedgerAccount.id))}
    yield 'option "title" "Stablegate ledger export"\n'
    yield 'option "operating_currency" "USD"\n\n'
    for code in sorted(assets):
        yield f"1970-01-01 commodity {commodity(code)}\n"
    for a in accounts.values():
        yield f"{a.created_at.date()} open {account_name(a)} {commodity(a.asset)}\n"
    last_day = dt.date(1970, 1, 1)
    volume: dict[int, list[int]] = {}  # account id -> [postings, sum of their absolute amounts]
    async for line, day in _transactions(session, accounts, assets, volume):
        last_day = max(last_day, day)
        yield line
    check_day = max([last_day, *(a.created_at.date() for a in accounts.values())]) + dt.timedelta(days=1)
    for a in accounts.values():
        posted = int(a.debits_posted) - int(a.credits_posted)  # beancount: debits are positive
        scale, unit = assets[a.asset], commodity(a.asset)
        tolerance = rounding_tolerance(*volume.get(a.id, (0, 0)))
        within = f" ~ {quantity(tolerance, scale)}" if tolerance else ""
        yield f"{check_day} balance {account_name(a)} {quantity(posted, scale)}{within} {unit}\n"


def rounding_tolerance(postings: int, volume: int) -> int:
    """How far beancount's own sum of an account's postings may be off, in base units.

    beancount adds with Python's default decimal context, 28 significant digits. While
    the absolute amounts of an account's postings sum to fewer digits (below 10^28 base
    units: 10^10 tokens of 18 decimals) every running total is exact and the balance
    assertion needs no tolerance. Beyond that each addition may round by half a unit in
    the 28th digit of a number no larger than that sum (and so may the negation of a
    credit): the tolerance is that unit per posting, so bean-check still catches any real
    difference above it."""
    if volume < 10**BEANCOUNT_DIGITS:
        return 0
    unit: int = 10 ** (len(str(volume)) - BEANCOUNT_DIGITS)  # the 28th digit's, in base units
    return (postings + 1) * unit  # + 1: the assertion's own subtraction rounds too


async def _transactions(
    session: AsyncSession, accounts: dict[int, LedgerAccount], assets: dict[str, int], volume: dict[int, list[int]]
) -> AsyncIterator[tuple[str, dt.date]]:
    """The posted journal as beancount transactions; counts each account's postings and
    their absolute amounts into `volume` (for rounding_tolerance)."""
    pending = aliased(LedgerTransfer)
    query = (
        select(LedgerTransfer, pending.created_at)
        .outerjoin(pending, pending.id == LedgerTransfer.pending_id)
        .where(LedgerTransfer.kind.in_(("posted", "post")))
        .order_by(LedgerTransfer.seq)
        .execution_options(yield_per=CHUNK_ROWS)
    )
    async for t, _pending_created in await session.stream(query):
        # Never before an account's open directive: a transfer's transaction may have begun
        # before the account's committed (its now() is earlier), and bean-check refuses it.
        debit, credit = accounts[t.debit_account], accounts[t.credit_account]
        day = max(t.created_at.date(), debit.created_at.date(), credit.created_at.date())
        for account_id in (t.debit_account, t.credit_account):
            seen = volume.setdefault(account_id, [0, 0])
            seen[0] += 1
            seen[1] += int(t.amount)
        amount = quantity(int(t.amount), assets[t.asset])
        unit = commodity(t.asset)
        label = _string(str((t.metadata_ or {}).get("type", t.kind)))
        yield (
            (
                f'\n{day} * "{label}" "{t.public_id}"\n'
                f'  transfer_id: "{_string(t.id)}"\n'
                f"  {account_name(debit)}  {amount} {unit}\n"
                f"  {account_name(credit)}  -{amount} {unit}\n"
            ),
            day,
        )
