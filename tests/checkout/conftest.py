"""The hosted checkout against real parts: the session's API server (configured with the
local chain's deterministic addresses, tests/conftest.py), a fresh anvil per test with our
stack deployed at those addresses, and the real block follower (tests/chains/conftest.py).

Helpers here create payments the way a merchant does (POST /v1/payments) and read the
public pages the way a payer does (no API key)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import stablegate.payments.receipts  # noqa: F401 (subscribes to chain events)
from stablegate.chains.follower import Follower
from stablegate.db import Database
from tests.chains.conftest import CONFIRMATIONS, Chain, chain, clean_chain_tables, follower  # noqa: F401
from tests.conftest import ApiServer, Tenant

USDC = 10**6
DAI = 10**18
MINE_INTERVAL_S = 0.4  # the live chain's block time in browser tests


def create_payment(api: ApiServer, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    body = {"amount": "25.00", "currency": "USD", "accepted": [{"chain": "local", "asset": "USDC"}]} | fields
    with api.client(tenant.test_key) as client:
        response = client.post("/v1/payments", json=body)
    assert response.status_code == 200, response.text
    payment: dict[str, Any] = response.json()
    return payment


def page_path(payment: dict[str, Any]) -> str:
    """The hosted page's path: hosted_url carries the configured public origin."""
    return urlsplit(payment["hosted_url"]).path


def option(payment: dict[str, Any], asset: str = "USDC") -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in payment["options"] if o["asset"] == asset)
    return found


def pay_transfer(chain: Chain, payment: dict[str, Any], units: int, asset: str = "USDC", payer: int = 0) -> str:  # noqa: F811
    o = option(payment, asset)
    return chain.transfer(o["token"], o["instructions"]["deposit_address"]["address"], units, payer)


@dataclass
class LiveChain:
    """A chain whose blocks keep coming; `mining` cleared pauses them (to look at a state
    that would otherwise pass in a block or two)."""

    chain: Chain
    mining: asyncio.Event


@pytest.fixture
async def live_chain(db: Database, chain: Chain, clean_chain_tables: None) -> AsyncIterator[LiveChain]:  # noqa: F811
    """The chain as a payer's browser meets it: blocks keep coming (a miner task) and the
    follower keeps following in the background, so the page must update by itself."""
    stop = asyncio.Event()
    live = LiveChain(chain, asyncio.Event())
    live.mining.set()
    runner = Follower(db, chain.config)

    async def mine() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not stop.is_set():
                if live.mining.is_set():
                    request = {"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": []}
                    await client.post(chain.anvil.url, json=request)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), MINE_INTERVAL_S)

    tasks = [asyncio.create_task(runner.run(stop)), asyncio.create_task(mine())]
    yield live
    stop.set()
    await asyncio.gather(*tasks)
    await runner.rpc.aclose()


__all__ = ["CONFIRMATIONS", "DAI", "USDC"]
