"""The beancount export of a random journal passes bean-check, balances included."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stablegate.db import Database
from stablegate.ledger import export
from stablegate.ledger import service as ledger
from stablegate.ledger.service import Transfer

BEAN_CHECK = Path(sys.executable).with_name("bean-check")
ASSETS = [
    ("USD", 2, None, None),
    ("EUR", 2, None, None),
    ("DAI.eth", 18, 1, "0x6b175474e89094c44da98b954eedeac495271d0f"),
]


async def _random_journal(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    async with db.session() as s:
        accounts: dict[str, list[int]] = {}
        for code, scale, chain, contract in ASSETS:
            await ledger.define_asset(s, code, scale, chain_id=chain, contract=contract)
            for i, kind in enumerate(("asset", "liability", "income", "equity")):
                acct = await ledger.open_account(s, f"bean:{seed}:{code}:{kind}:{i}", code, kind)
                accounts.setdefault(code, []).append(acct.id)
        for n in range(rng.randint(5, 40)):
            code = rng.choice(list(accounts))
            debit, credit = rng.sample(accounts[code], 2)
            amount = rng.randint(1, 10**20 if code == "DAI.eth" else 10**7)
            kind = rng.choice(["posted", "posted", "pending"])
            tid = f"bean:{seed}:{n}"
            await ledger.create_transfers(s, [Transfer(tid, debit, credit, code, amount, kind=kind)])  # type: ignore[arg-type]
            if kind == "pending" and rng.random() < 0.7:
                resolution = rng.choice(["post", "void"])
                post_amount = rng.randint(1, amount) if resolution == "post" else None
                await ledger.create_transfers(
                    s,
                    [Transfer(f"{tid}:r", kind=resolution, pending_id=tid, amount=post_amount)],  # type: ignore[arg-type]
                )


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(min_value=0, max_value=2**31))
async def test_export_passes_bean_check(db: Database, seed: int) -> None:
    await _random_journal(db, seed)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"stablegate-export-{seed}.beancount"
    async with db.session() as s:
        with path.open("w") as out:
            async for line in export.beancount(s):
                out.write(line)
    result = subprocess.run([str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=120)  # noqa: ASYNC221
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    path.unlink()


def _bean_check(path: Path) -> None:
    result = subprocess.run([str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


async def test_export_is_one_snapshot_while_transfers_commit(db: Database, tmp_path: Path) -> None:
    """A transfer committed after the export read the accounts but before it streamed the
    journal is in neither: the closing balances still match the transactions. Ids and
    labels with quotes, backslashes and line breaks, and a long token code, stay valid."""
    async with db.session() as s:
        await ledger.define_asset(s, "USD", 2)
        await ledger.define_asset(
            s, "USDC.arbitrum-one-sepolia", 6, chain_id=421614, contract="0x75faf114eafb1bdbe2f0316df893fd58ce46aa4d"
        )
        a = await ledger.open_account(s, "snap:a", "USD", "asset")
        b = await ledger.open_account(s, "snap:b", "USD", "liability")
        c = await ledger.open_account(s, "snap:c", "USDC.arbitrum-one-sepolia", "asset")
        d = await ledger.open_account(s, "snap:d", "USDC.arbitrum-one-sepolia", "equity")
        nasty = Transfer('snap\\"1\\', a.id, b.id, "USD", 100, metadata={"type": 'refund "x" \\\nlate'})
        await ledger.create_transfers(s, [nasty, Transfer("snap-2", c.id, d.id, "USDC.arbitrum-one-sepolia", 5)])
    path = tmp_path / "snapshot.beancount"
    async with db.session() as s:
        lines = export.beancount(s)
        with path.open("w") as out:
            out.write(await anext(lines))  # the accounts and their balances are read by now
            await ledger.post(db, [Transfer("snap-late", a.id, b.id, "USD", 7)])
            async for line in lines:
                out.write(line)
    written = path.read_text()
    assert "snap-late" not in written and "snap/'1/" in written
    _bean_check(path)
    async with db.session() as s:  # a later export has it, and still adds up
        with path.open("w") as out:
            async for line in export.beancount(s):
                out.write(line)
    assert "snap-late" in path.read_text()
    _bean_check(path)


async def test_balances_beyond_beancounts_precision_still_check(db: Database, tmp_path: Path) -> None:
    """beancount adds in 28 significant digits; an 18-decimal token past 10^10 units needs
    more. The balance assertion then carries the tolerance of beancount's own rounding,
    and a real difference (one more posting left out) still fails it."""
    async with db.session() as s:
        await ledger.define_asset(s, "WEI.eth", 18, chain_id=1, contract="0x" + "11" * 20)
        a = await ledger.open_account(s, "big:a", "WEI.eth", "asset")
        b = await ledger.open_account(s, "big:b", "WEI.eth", "equity")
        huge = 2 * 10**30 + 2  # 2 000 000 000 000.000 000 000 000 000 002
        await ledger.create_transfers(
            s, [Transfer(f"big-{n}", a.id, b.id, "WEI.eth", huge + n) for n in range(3)] + [
                Transfer("big-small", b.id, a.id, "WEI.eth", 7)
            ]
        )  # fmt: skip
    path = tmp_path / "big.beancount"
    async with db.session() as s:
        with path.open("w") as out:
            async for line in export.beancount(s):
                out.write(line)
    _bean_check(path)
    assert " ~ " in path.read_text()
    # Drop a posting large enough to matter: bean-check must refuse the balance.
    text = path.read_text().split("\n")
    start = next(i for i, line in enumerate(text) if '"big-1"' in line) - 1
    path.write_text("\n".join(text[:start] + text[start + 5 :]))
    result = subprocess.run([str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=120)  # noqa: ASYNC221
    assert result.returncode != 0 and "Balance failed" in result.stdout + result.stderr


def test_rounding_tolerance_only_past_28_digits() -> None:
    assert export.rounding_tolerance(1000, 10**28 - 1) == 0
    assert export.rounding_tolerance(3, 10**28) == 40  # (3 postings + the comparison) x the 28th digit: 10
    assert export.rounding_tolerance(3, 6 * 10**30) == 4000


def test_names_and_quantities() -> None:
    assert export.quantity(12345, 2) == "123.45"
    assert export.quantity(1, 18) == "0.000000000000000001"
    assert export.quantity(-5, 2) == "-0.05"
    assert export.quantity(0, 6) == "0.000000"
    assert export.commodity("USDC.base") == "USDC.BASE"
