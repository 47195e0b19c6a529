"""End to end, every part real: the API server (configured with a local anvil and our
contracts), the block follower, the ledger, the webhook worker and a merchant's HTTP
receiver. A payment is paid through the contract, and another through its deposit
address; each reaches `succeeded`, the merchant's server receives signed webhooks that
verify with the official `standardwebhooks` package, and the balance is amount − fee."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from web3 import Web3

from stablegate import localnet
from stablegate.chains import registry
from stablegate.chains.anvil import DEV_PRIVATE_KEYS, Anvil
from stablegate.chains.follower import Follower
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.jobs.app import run_worker
from stablegate.payments.schemas import Payment
from stablegate.rails.deploy import deploy_local
from tests.chains.conftest import Chain
from tests.conftest import ApiServer, Tenant, start_server, stop_server
from tests.payments.conftest import CONFIRMATIONS, USDC, pay_contract, pay_transfer

ALLOW_LOCAL = {"STABLEGATE_WEBHOOK_ALLOW": "127.0.0.1/32"}
MAX_WORKER_RUNS = 20


@dataclass
class Receiver:
    """A merchant's webhook endpoint: records every request and answers 200."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    record = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            record.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield record
    server.shutdown()


@pytest.fixture(scope="module")
def e2e_chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        stack = deploy_local(anvil.url)
        config = localnet.chain_config(stack, anvil.url, max_range_blocks=50, poll_interval_ms=100)
        yield Chain(anvil, Web3(Web3.HTTPProvider(anvil.url)), stack, config)


@pytest.fixture(scope="module")
def e2e_api(database_url: str, e2e_chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    directory = tmp_path_factory.mktemp("e2e_api")
    chains_file = directory / "chains.json"
    chains_file.write_text(json.dumps([registry.to_dict(e2e_chain.config)]))
    env = {
        "STABLEGATE_CHAINS_FILE": str(chains_file),
        "STABLEGATE_INTENT_SIGNER_KEY": DEV_PRIVATE_KEYS[0],
        **ALLOW_LOCAL,
    }
    server = start_server(database_url, directory / "server.log", env)
    yield server
    stop_server(server)


async def deliver(database_url: str, monkeypatch: pytest.MonkeyPatch, receiver: Receiver, expected: int) -> None:
    """Run the real worker until the receiver has `expected` requests. A worker that does
    not wait stops at its first empty fetch, and a fetch also comes back empty while the
    only jobs left share a lock stripe with one still running: so run it again."""
    for name, value in ALLOW_LOCAL.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    for _ in range(MAX_WORKER_RUNS):
        await run_worker(
            database_url, settings, concurrency=2, wait=False, install_signal_handlers=False, queues=["webhooks"]
        )
        if len(receiver.requests) >= expected:
            return


async def follow(db: Database, chain: Chain) -> None:
    """Read the chain up to its head, then confirm what was seen."""
    follower = Follower(db, chain.config)
    async with follower.leading(wait=False):
        await follower.sync()
        chain.mine(CONFIRMATIONS)
        await follower.sync()
    await follower.rpc.aclose()


@pytest.mark.parametrize("rail", ["contract", "deposit_address"])
async def test_paid_payment_reaches_the_merchant_as_verified_webhooks_and_a_net_balance(
    rail: str,
    db: Database,
    database_url: str,
    e2e_api: ApiServer,
    e2e_chain: Chain,
    tenant: Tenant,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with e2e_api.client(tenant.test_key) as client:
        endpoint = client.post("/v1/webhook_endpoints", json={"url": receiver.url})
        assert endpoint.status_code == 200, endpoint.text
        secret = endpoint.json()["secret"]
        before = {b["asset"]: int(b["amount"]) for b in client.get("/v1/balance").json()["available"]}
        created = client.post("/v1/payments", json={"amount": "25.00", "currency": "USD"})
        assert created.status_code == 200, created.text
    payment = Payment.model_validate(created.json())

    if rail == "contract":
        assert pay_contract(e2e_chain, payment)["status"] == 1
        fee = int(payment.options[0].instructions.contract.intent["fee"])  # type: ignore[union-attr]
    else:
        pay_transfer(e2e_chain, payment, 25 * USDC)
        fee = 25 * USDC // 100
    await follow(db, e2e_chain)
    await deliver(database_url, monkeypatch, receiver, expected=3)

    with e2e_api.client(tenant.test_key) as client:
        paid = client.get(f"/v1/payments/{payment.id}").json()
        balance = client.get("/v1/balance").json()
    assert (paid["status"], paid["paid"], paid["receipts"][0]["rail"]) == ("succeeded", "exact", rail)
    available = {b["asset"]: int(b["amount"]) for b in balance["available"]}
    assert available["USDC.local"] - before.get("USDC.local", 0) == 25 * USDC - fee

    # Deliveries run concurrently and may arrive in any order (as the spec allows);
    # events carry time-sortable ids, which is how receivers order them.
    mine = sorted(
        ((h, b) for h, b in receiver.requests if json.loads(b)["data"]["object"]["id"] == payment.id),
        key=lambda request: json.loads(request[1])["id"],
    )
    types = [json.loads(b)["type"] for _, b in mine]
    assert types == ["payment.created", "payment.processing", "payment.succeeded"], types
    for headers, body in mine:
        event = Webhook(secret).verify(body, headers)  # raises on a bad signature or an old timestamp
        assert event["data"]["object"]["id"] == payment.id
    last = json.loads(mine[-1][1])["data"]["object"]
    assert last["status"] == "succeeded" and last["amount_received"] == "25.00"
