"""SIGKILL the sender at each step of a payout and restart it: exactly one on-chain
transfer, the ledger balanced, the payout paid (design 0006, failure modes).

The sender runs as a real process (`python -m stablegate sender`) on a real anvil and
PostgreSQL; STABLEGATE_FAILPOINTS makes it kill itself with SIGKILL at the named step.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from web3 import Web3

from stablegate.chains import registry
from stablegate.db import Database
from stablegate.merchants.service import Principal
from stablegate.rails.contracts import TRANSFER_TOPIC
from stablegate.settlement import service
from stablegate.settlement.sender import DEV_PASSPHRASE
from stablegate.settlement.signers import write_keystore
from tests.chains.conftest import Chain
from tests.conftest import Tenant
from tests.settlement.conftest import (
    DESTINATION,
    TREASURY_KEY,
    USDC,
    available,
    credit,
    destination,
    fetch_payout,
    fund_treasury,
    payout,
    token_balance,
)

EXIT_TIMEOUT_S = 30.0
PAID_TIMEOUT_S = 60.0


def start_sender(database_url: str, chain: Chain, tmp_path: Path, failpoint: str | None) -> subprocess.Popen[bytes]:
    keystore = tmp_path / "keystore"
    if not keystore.exists():
        write_keystore(keystore / "treasury.json", TREASURY_KEY, DEV_PASSPHRASE, kdf_iterations=1024)
    chains_file = tmp_path / "chains.json"
    chains_file.write_text(json.dumps([registry.to_dict(chain.config)]))
    env = os.environ | {
        "DATABASE_URL": database_url,
        "STABLEGATE_CHAINS_FILE": str(chains_file),
        "STABLEGATE_KEYSTORE_DIR": str(keystore),
        "STABLEGATE_KEYSTORE_PASSPHRASE": DEV_PASSPHRASE,
        "STABLEGATE_TX_POLL_INTERVAL_MS": "50",
        "STABLEGATE_FAILPOINTS": failpoint or "",
    }
    log = (tmp_path / f"sender-{failpoint or 'clean'}.log").open("ab")
    command = [sys.executable, "-m", "stablegate", "sender", "--metrics-port", "0"]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log)


def transfers_to(chain: Chain, recipient: str) -> list[str]:
    """Hashes of every USDC Transfer to `recipient` on the whole chain."""
    logs = chain.w3.eth.get_logs(
        {
            "fromBlock": 0,
            "toBlock": "latest",
            "address": Web3.to_checksum_address(chain.stack.usdc),
            "topics": [TRANSFER_TOPIC, None, "0x" + recipient[2:].lower().rjust(64, "0")],
        }
    )
    return ["0x" + bytes(log["transactionHash"]).hex().removeprefix("0x") for log in logs]


async def wait_paid(db: Database, principal: Principal, ctx: service.Context, chain: Chain, payout_id: str) -> None:
    deadline = time.monotonic() + PAID_TIMEOUT_S
    while time.monotonic() < deadline:
        if (await fetch_payout(db, principal, ctx, payout_id)).status == "paid":
            return
        chain.mine(1)  # confirmations come with blocks
        await asyncio.sleep(0.1)
    raise AssertionError(f"payout {payout_id} not paid after {PAID_TIMEOUT_S} s")


async def ledger_balanced(db: Database) -> bool:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "SELECT asset, sum(debits_posted) = sum(credits_posted) AND sum(debits_pending) = sum(credits_pending)"
                " FROM ledger_accounts GROUP BY asset"
            )
        )
        return all(ok for _, ok in rows)


@pytest.mark.parametrize("failpoint", ["before_sign", "after_sign", "after_broadcast", "after_receipt"])
async def test_sigkill_at_each_step_pays_exactly_once(
    failpoint: str,
    database_url: str,
    db: Database,
    chain: Chain,
    tenant: Tenant,
    principal: Principal,
    sctx: service.Context,
    tmp_path: Path,
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, 100 * USDC)
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")  # the reserve is committed

    crashing = start_sender(database_url, chain, tmp_path, f"txmanager.{failpoint}")
    assert crashing.wait(timeout=EXIT_TIMEOUT_S) == -signal.SIGKILL
    async with db.session() as session:
        stored = (
            (
                await session.execute(
                    text(
                        "SELECT a.tx_hash FROM tx_attempts a JOIN payouts p ON p.tx_intent_id = a.intent_id"
                        " WHERE p.id = :id"
                    ),
                    {"id": created.id},
                )
            )
            .scalars()
            .all()
        )
    assert len(stored) == (0 if failpoint == "before_sign" else 1)

    restarted = start_sender(database_url, chain, tmp_path, None)
    try:
        await wait_paid(db, principal, sctx, chain, created.id)
    finally:
        restarted.terminate()
        restarted.wait(timeout=EXIT_TIMEOUT_S)

    paid = await fetch_payout(db, principal, sctx, created.id)
    assert transfers_to(chain, DESTINATION) == [paid.tx_hash]  # exactly one transfer
    if stored:
        assert paid.tx_hash == stored[0]  # the stored transaction was re-sent, not re-signed
    assert token_balance(chain, DESTINATION) == 10 * USDC
    assert await available(db, tenant.merchant_id) == 90 * USDC
    assert await ledger_balanced(db)
