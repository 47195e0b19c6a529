"""`stablegate demo`: a scripted end-to-end run against a real server, with a summary.

Each step calls the real HTTP API (or the real worker) and checks what came back; the
summary says what was shown and whether it held. Later capabilities add their steps.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from stablegate import demo_chain
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.devserver import serving
from stablegate.jobs import outbox
from stablegate.jobs.app import purge_idempotency_keys, run_worker
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.ledger.service import Transfer
from stablegate.merchants import service as merchants

BASE_USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"  # USDC on Base (chain 8453)


@dataclass
class Demo:
    client: httpx.AsyncClient
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def check(self, step: str, ok: bool, detail: str) -> None:
        self.rows.append((step, ok, detail))


async def _setup(db: Database, settings: Settings, demo: Demo) -> None:
    secret = settings.resolved_secret_key()
    async with db.session() as session:
        acme = await merchants.create_merchant(session, "Demo Coffee Roasters")
        other = await merchants.create_merchant(session, "Another Merchant")
        demo.ids.update(merchant=acme.id, other=other.id)
        for name, merchant_id, mode, kind, scopes in (
            ("test", acme.id, "test", "secret", None),
            ("live", acme.id, "live", "secret", None),
            ("readonly", acme.id, "test", "restricted", ["customers:read"]),
            ("other", other.id, "test", "secret", None),
        ):
            created = await merchants.create_key(
                session, secret, merchant_id=merchant_id, mode=mode, kind=kind, scopes=scopes
            )
            demo.keys[name] = created.secret
            demo.ids[f"key_{name}"] = created.key.id


async def _account_and_idempotency(demo: Demo) -> None:
    c = demo.client
    r = await c.get("/v1/account", headers=demo.auth("test"))
    demo.check("GET /v1/account", r.status_code == 200, f"{r.json().get('id')} mode={r.json().get('mode')}")
    key = str(uuid.uuid4())
    body = {"email": "ada@example.com", "name": "Ada", "metadata": {"order": "1001"}}
    first = await c.post("/v1/customers", json=body, headers=demo.auth("test") | {"Idempotency-Key": key})
    again = await c.post("/v1/customers", json=body, headers=demo.auth("test") | {"Idempotency-Key": key})
    demo.ids["customer"] = first.json().get("id", "")
    demo.check("POST /v1/customers", first.status_code == 200, demo.ids["customer"])
    demo.check(
        "idempotent retry",
        again.content == first.content and again.headers.get("idempotent-replayed") == "true",
        "same key, same body: byte-identical replay",
    )
    changed = await c.post(
        "/v1/customers", json=body | {"name": "Eve"}, headers=demo.auth("test") | {"Idempotency-Key": key}
    )
    demo.check(
        "key reuse, other body",
        changed.status_code == 400 and changed.json()["error"]["type"] == "idempotency_error",
        f"{changed.status_code} {changed.json()['error']['code']}",
    )


async def _pagination(demo: Demo) -> None:
    c = demo.client
    for n in range(3):
        await c.post("/v1/customers", json={"name": f"Customer {n}"}, headers=demo.auth("test"))
    page1 = (await c.get("/v1/customers", params={"limit": 2}, headers=demo.auth("test"))).json()
    last = page1["data"][-1]["id"]
    page2 = (
        await c.get("/v1/customers", params={"limit": 2, "starting_after": last}, headers=demo.auth("test"))
    ).json()
    ids = [d["id"] for d in page1["data"] + page2["data"]]
    demo.check(
        "cursor pagination",
        page1["has_more"] and len(set(ids)) == 4 and ids == sorted(ids, reverse=True),
        f"2 pages, {len(ids)} customers newest first, has_more={page1['has_more']}→{page2['has_more']}",
    )


async def _isolation_and_errors(demo: Demo) -> None:
    c, cus = demo.client, demo.ids["customer"]
    cases: list[tuple[str, Awaitable[httpx.Response], int]] = [
        ("another merchant's id", c.get(f"/v1/customers/{cus}", headers=demo.auth("other")), 404),
        ("live key, test object", c.get(f"/v1/customers/{cus}", headers=demo.auth("live")), 404),
        ("restricted key writes", c.post("/v1/customers", json={}, headers=demo.auth("readonly")), 403),
        ("unknown field", c.post("/v1/customers", json={"nmae": "x"}, headers=demo.auth("test")), 400),
        (
            "malformed JSON",
            c.post("/v1/customers", content=b"{oops", headers=demo.auth("test") | {"content-type": "application/json"}),
            400,
        ),
        ("limit=1000", c.get("/v1/customers", params={"limit": 1000}, headers=demo.auth("test")), 400),
        ("no API key", c.get("/v1/customers"), 401),
    ]
    for label, call, expected in cases:
        r = await call
        err = r.json().get("error", {})
        demo.check(label, r.status_code == expected, f"{r.status_code} {err.get('code')} param={err.get('param')}")


async def _ledger(demo: Demo, db: Database) -> None:
    """Book what a settled 25.00 USDC payment does (design 0002), then read it back
    through the merchant API. Later issues book this from real chain events."""
    m = demo.ids["merchant"]
    async with db.session() as s:
        await ledger.define_asset(s, "USDC.base", 6, chain_id=8453, contract=BASE_USDC)
        clearing = await chart.clearing_account(s, 8453, "USDC.base")
        pending = await chart.merchant_account(s, m, "test", "pending", "USDC.base")
        available = await chart.merchant_account(s, m, "test", "available", "USDC.base")
        fees = await chart.platform_account(s, "test", "fee_revenue", "USDC.base")
        meta = {"type": "payment", "source": "pay_demo"}
        await ledger.create_transfers(
            s,
            [
                Transfer(f"demo:{m}:pay", clearing.id, pending.id, "USDC.base", 25_000_000, metadata=meta),
                Transfer(f"demo:{m}:settle", pending.id, available.id, "USDC.base", 25_000_000, metadata=meta),
                Transfer(f"demo:{m}:fee", available.id, fees.id, "USDC.base", 250_000, metadata={"type": "fee"}),
            ],
        )
    balance = (await demo.client.get("/v1/balance", headers=demo.auth("test"))).json()
    entries = (await demo.client.get("/v1/balance_transactions", headers=demo.auth("test"))).json()["data"]
    available_now = balance["available"][0]["amount"] if balance["available"] else "0"
    demo.check(
        "ledger → GET /v1/balance", available_now == "24750000", f"available {int(available_now) / 1e6:.2f} USDC.base"
    )
    demo.check(
        "GET /v1/balance_transactions", len(entries) == 3, ", ".join(f"{e['type']} {e['amount']}" for e in entries)
    )


async def _revocation(demo: Demo, db: Database) -> None:
    async with db.session() as session:
        await merchants.revoke_key(session, demo.ids["key_readonly"])
    r = await demo.client.get("/v1/customers", headers=demo.auth("readonly"))
    demo.check("revoked key", r.status_code == 401, f"next request → {r.status_code}")


async def _outbox(demo: Demo, db: Database, url: str, settings: Settings) -> None:
    async with db.session() as session:
        job_id = await outbox.enqueue(session, purge_idempotency_keys, timestamp=int(time.time()))
    await run_worker(url, settings, concurrency=1, wait=False, install_signal_handlers=False, queues=["system"])
    async with db.session() as session:
        status = await session.scalar(text("SELECT status FROM procrastinate_jobs WHERE id = :id"), {"id": job_id})
    demo.check("job via outbox + worker", status == "succeeded", f"job {job_id} {status}")


async def _ops(demo: Demo) -> None:
    ready = await demo.client.get("/readyz")
    metrics = (await demo.client.get("/metrics")).text
    demo.check("/readyz", ready.status_code == 200, str(ready.json().get("migration")))
    demo.check("/metrics", "stablegate_http_requests_total" in metrics, "per-route request counters and latency")


async def run_demo(url: str, settings: Settings, port: int, console: Console) -> bool:
    db = Database.connect(url, settings)
    steps: list[Callable[[Demo], Awaitable[None]]] = [_account_and_idempotency, _pagination, _isolation_and_errors]
    try:
        async with (
            serving(url, settings, "127.0.0.1", port) as api,
            httpx.AsyncClient(base_url=api.base_url, timeout=30) as client,
        ):
            demo = Demo(client)
            await _setup(db, settings, demo)
            for step in steps:
                await step(demo)
            await _ledger(demo, db)
            await demo_chain.run(db, settings.data_dir, demo.ids["merchant"], demo.check)
            await _revocation(demo, db)
            await _outbox(demo, db, url, settings)
            await _ops(demo)
    finally:
        await db.dispose()
    return _summary(console, demo, api.base_url)


def _summary(console: Console, demo: Demo, base_url: str) -> bool:
    table = Table("step", "", "what happened", title="Stablegate demo")
    for step, ok, detail in demo.rows:
        table.add_row(step, "[green]✓[/green]" if ok else "[red]✗[/red]", detail)
    console.print(table)
    passed = sum(ok for _, ok, _ in demo.rows)
    console.print(f"merchant {demo.ids['merchant']} · API was {base_url} · {passed}/{len(demo.rows)} checks passed")
    return passed == len(demo.rows)
