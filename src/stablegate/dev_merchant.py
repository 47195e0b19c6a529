"""`stablegate dev`'s demo merchant, printed at start: a test API key to try the API with, a
payment whose hosted checkout page can be opened, and a command that pays it on the local
chain.

The merchant and its key are made on the first start and kept in the data dir
(`dev-merchant.json`, readable by its owner only: the API never shows a key twice);
later starts reuse them as long as the key still works against this database and secret.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from stablegate.chains.registry import ChainConfig
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.merchants import service as merchants

ACCOUNT_FILE = "dev-merchant.json"
MERCHANT_NAME = "Dev Coffee Roasters"
TRANSFER_SELECTOR = "a9059cbb"  # transfer(address,uint256)
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DevMerchant:
    merchant_id: str
    key: str  # sk_test_…


@dataclass(frozen=True)
class DevStart:
    merchant: DevMerchant
    path: Path  # where the key is kept
    payment: dict[str, Any]  # a fresh payment, as POST /v1/payments answered
    pay_command: str  # pays it from the local chain's funded payer


async def prepare(url: str, settings: Settings, base_url: str, chain: ChainConfig, payer: str) -> DevStart:
    path = settings.data_dir / ACCOUNT_FILE
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        merchant = _load(path)
        if merchant is None or not await _works(client, merchant):
            merchant = await _create(url, settings)
            _store(path, merchant)
        payment = await _payment(client, merchant)
    option = next(o for o in payment["options"] if o["asset"] == "USDC" and o["chain_id"] == chain.chain_id)
    address = option["instructions"]["deposit_address"]["address"]
    command = transfer_command(chain.rpc_urls[0], payer, option["token"], address, int(option["quote"]["amount_units"]))
    return DevStart(merchant, path, payment, command)


def transfer_command(rpc_url: str, payer: str, token: str, to: str, units: int) -> str:
    """A curl that has the local chain send `units` of `token` from `payer` to `to`: anvil's
    dev accounts are unlocked, so a plain eth_sendTransaction of ERC-20 transfer() works."""
    assert 0 < units < 2**256
    data = "0x" + TRANSFER_SELECTOR + to[2:].lower().rjust(64, "0") + f"{units:064x}"
    tx = {"from": payer, "to": token, "data": data}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction", "params": [tx]})
    return f"curl -s {rpc_url} -H 'content-type: application/json' -d '{body}'"


async def _works(client: httpx.AsyncClient, merchant: DevMerchant) -> bool:
    reply = await client.get("/v1/account", headers=_auth(merchant))
    return reply.status_code == 200 and reply.json().get("id") == merchant.merchant_id


async def _create(url: str, settings: Settings) -> DevMerchant:
    db = Database.connect(url, settings)
    try:
        async with db.session() as session:
            merchant = await merchants.create_merchant(session, MERCHANT_NAME)
            key = await merchants.create_key(
                session, settings.resolved_secret_key(), merchant_id=merchant.id, mode="test", name="stablegate dev"
            )
    finally:
        await db.dispose()
    return DevMerchant(merchant.id, key.secret)


async def _payment(client: httpx.AsyncClient, merchant: DevMerchant) -> dict[str, Any]:
    body = {"amount": "25.00", "currency": "USD", "description": "A demo order", "reference": "dev-demo"}
    reply = await client.post("/v1/payments", json=body, headers=_auth(merchant))
    if reply.status_code != 200:
        raise RuntimeError(f"POST /v1/payments → {reply.status_code} {reply.text[:300]}")
    payment: dict[str, Any] = reply.json()
    return payment


def _auth(merchant: DevMerchant) -> dict[str, str]:
    return {"Authorization": f"Bearer {merchant.key}"}


def _load(path: Path) -> DevMerchant | None:
    try:
        raw = json.loads(path.read_text())
        return DevMerchant(str(raw["merchant_id"]), str(raw["key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(path: Path, merchant: DevMerchant) -> None:
    """Written owner-only, then renamed into place: the key is a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when an old temporary file was there
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(merchant), out)
    tmp.replace(path)
