"""The CLI as scripts use it: --json output, keys shown once, revocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from tests.conftest import ApiServer


def stablegate(database_url: str, *args: str) -> dict[str, object]:
    env = os.environ | {"DATABASE_URL": database_url}
    out = subprocess.run(
        [sys.executable, "-m", "stablegate", *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_merchant_key_lifecycle(database_url: str, api: ApiServer) -> None:
    merchant = stablegate(database_url, "merchants", "create", "--name", "CLI Co", "--json")
    assert str(merchant["id"]).startswith("mch_")
    key = stablegate(database_url, "keys", "create", "--merchant", str(merchant["id"]), "--mode", "live", "--json")
    secret = str(key["secret"])
    assert secret.startswith("sk_live_") and str(key["prefix"]) in secret
    listed = stablegate(database_url, "keys", "list", "--merchant", str(merchant["id"]), "--json")
    assert secret not in json.dumps(listed), "listing never shows the key again"
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{api.base_url}/v1/account", headers=headers).json()["mode"] == "live"
    revoked = stablegate(database_url, "keys", "revoke", str(key["id"]), "--json")
    assert revoked["revoked"]
    assert httpx.get(f"{api.base_url}/v1/account", headers=headers).status_code == 401
    names = [m["name"] for m in stablegate(database_url, "merchants", "list", "--json")["data"]]  # type: ignore[union-attr]
    assert "CLI Co" in names


def test_cli_errors_are_readable(database_url: str) -> None:
    env = os.environ | {"DATABASE_URL": database_url}
    out = subprocess.run(
        [sys.executable, "-m", "stablegate", "keys", "create", "--merchant", "mch_nope", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "No such merchant" in out.stdout


def test_ledger_export_command(database_url: str, tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "ledger.beancount"
    env = os.environ | {"DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "stablegate", "ledger", "export", "--format", "beancount", "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    check = subprocess.run(
        [str(Path(sys.executable).with_name("bean-check")), str(out)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout[-2000:]
    bad = subprocess.run(
        [sys.executable, "-m", "stablegate", "ledger", "export", "--format", "csv"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2


def test_payment_settings_commands(database_url: str) -> None:
    merchant = str(stablegate(database_url, "merchants", "create", "--name", "Fees Co", "--json")["id"])
    profile = stablegate(
        database_url,
        "merchants",
        "payment-profile",
        "--merchant",
        merchant,
        "--spread-bps",
        "25",
        "--accept",
        "base:USDC",
        "--json",
    )
    assert profile["accepted"] == ["base:USDC"]
    schedule = stablegate(
        database_url,
        "merchants",
        "fee-schedule",
        "--merchant",
        merchant,
        "--bps",
        "80",
        "--rail",
        "contract",
        "--asset",
        "USDC.base",
        "--fixed",
        "100000",
        "--json",
    )
    assert (schedule["bps"], schedule["fixed"]) == (80, 100000)
    env = os.environ | {"DATABASE_URL": database_url}
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "stablegate",
            "merchants",
            "fee-schedule",
            "--merchant",
            merchant,
            "--bps",
            "80",
            "--fixed",
            "5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "named asset" in refused.stdout


def test_settlement_schedule_command(database_url: str, api: ApiServer, tmp_path: object) -> None:
    from pathlib import Path

    from tests.conftest import payments_env

    env = os.environ | {"DATABASE_URL": database_url} | payments_env(Path(str(tmp_path)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "stablegate", "merchants", "settlement-schedule", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    merchant = str(stablegate(database_url, "merchants", "create", "--name", "Settle Co", "--json")["id"])
    key = str(stablegate(database_url, "keys", "create", "--merchant", merchant, "--json")["secret"])
    body = {"chain": "local", "asset": "USDC", "address": "0x" + "5a" * 20}
    created = httpx.post(
        f"{api.base_url}/v1/payout_destinations", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert created.status_code == 200, created.text
    where = ["--merchant", merchant, "--chain", "local", "--asset", "USDC", "--destination", created.json()["id"]]

    daily = cli(*where, "--daily-at", "09:30", "--minimum", "25", "--json")
    assert daily.returncode == 0, daily.stdout + daily.stderr
    assert json.loads(daily.stdout) | {"merchant": None} == {
        "merchant": None,
        "mode": "test",
        "asset": "USDC.local",
        "destination": created.json()["id"],
        "kind": "daily",
        "daily_at": "09:30",
        "threshold_units": None,
        "minimum_units": "25000000",
    }
    threshold = json.loads(cli(*where, "--threshold", "100.5", "--json").stdout)
    assert (threshold["kind"], threshold["threshold_units"], threshold["minimum_units"]) == (
        "threshold",
        "100500000",
        "1",
    )

    both = cli(*where, "--daily-at", "09:30", "--threshold", "5")
    assert both.returncode == 2 and "either a daily time or a threshold" in both.stdout
    bad_time = cli(*where, "--daily-at", "25:00")
    assert bad_time.returncode == 2 and "HH:MM" in bad_time.stdout
    bad_asset = cli(*where[:4], "--asset", "DAI", *where[6:], "--daily-at", "09:30")
    assert bad_asset.returncode == 2 and "destination" in bad_asset.stdout
