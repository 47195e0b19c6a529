"""`stablegate demo` end to end (design 0007, "The demo"): the CLI in a process of its own
on the test database server — a fresh anvil, the API server, worker, follower and sender,
the whole story — exits 0 and its summary reports every step. A second run on the same
database takes a chain id of its own and holds as well."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT_S = 300
STEPS = (
    "1/6 A payment paid by wallet",
    "2/6 A payment paid by a plain transfer",
    "3/6 An underpayment, topped up",
    "4/6 A refund",
    "5/6 A sweep",
    "6/6 A settlement payout",
)
CHECKS = (
    "idempotent retry",
    "cursor pagination",
    "another merchant's id",
    "job via outbox + worker",
    "paid by wallet",
    "same intent twice",
    "paid by transfer",
    "look-alike token ignored",
    "underpaid, then topped up",
    "refund paid on chain",
    "sweep to the treasury",
    "balance before the payout",
    "settlement payout",
    "settlement record",
    "balance after the payout",
    "webhooks delivered",
    "webhook signatures",
    "every event sent",
    "fee revenue",
    "clearing after the sweep",
    "treasury: ledger = chain",
    "fee wallet: ledger = chain",
    "the books balance",
    "revoked key",
)
TABLES = ("Payments", "Webhooks", "Ledger and chain", "On-chain transactions", "Checks")


def _demo(database_url: str, data_dir: Path) -> str:
    env = os.environ | {"DATABASE_URL": database_url, "STABLEGATE_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "stablegate", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    log = data_dir / "demo.log"
    assert result.returncode == 0, f"demo failed:\n{output[-8000:]}\nlog:\n{log.read_text()[-4000:]}"
    return output


def _check_rows(output: str) -> dict[str, str]:
    """The checks table: name → ✓ or ✗."""
    rows = re.findall(r"^│ (.+?) +│ ([✓✗]) +│", output, flags=re.MULTILINE)
    return {name.strip(): mark for name, mark in rows}


def _chain_id(output: str) -> int:
    found = re.search(r"chain id (\d+)", output)
    assert found is not None, output[:2000]
    return int(found.group(1))


def test_demo_runs_the_whole_story_and_every_check_holds(database_url: str, tmp_path: Path) -> None:
    first = _demo(database_url, tmp_path)
    for step in STEPS:
        assert step in first, step
    for title in TABLES:
        assert title in first, title
    rows = _check_rows(first)
    missing = [c for c in CHECKS if c not in rows]
    assert not missing, f"checks not reported: {missing}\n{first[-6000:]}"
    assert set(rows.values()) == {"✓"} and "✗" not in first
    passed = re.search(r"(\d+)/(\d+) checks passed", first)
    assert passed is not None and passed.group(1) == passed.group(2) == str(len(rows))

    again = _demo(database_url, tmp_path)
    assert _chain_id(again) != _chain_id(first)
    assert "✗" not in again and f"{len(rows)}/{len(rows)} checks passed" in again
