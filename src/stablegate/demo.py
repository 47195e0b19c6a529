"""`stablegate demo`: a scripted end-to-end run on the embedded defaults, with a summary
(design 0007, "The demo").

It runs what `stablegate dev` runs — the API server, the worker (webhook delivery), the
block follower and the sender (the transaction manager, signing with a dev keystore) —
on a fresh anvil, makes a demo merchant whose webhook endpoint is a local receiver that
verifies every delivery, checks the API's conventions, tells the story of `demo_story`
(money in three ways, a refund, a sweep, a settlement payout) and prints what happened:
payments, webhooks, the ledger against the chain, the transactions. The exit status is
0 only if every check held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from stablegate import demo_chain, demo_receiver
from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.registry import ChainConfig
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.demo_story import LedgerView, Story, StoryFailed, Tx, short, usdc
from stablegate.devserver import serving
from stablegate.jobs import outbox
from stablegate.jobs.app import purge_idempotency_keys, run_worker
from stablegate.kit.tasks import cancel_and_wait
from stablegate.merchants import service as merchants
from stablegate.observability import logging as obs_logging
from stablegate.settlement.sender import DEV_PASSPHRASE, write_dev_keystore
from stablegate.webhooks.jobs import QUEUE as WEBHOOK_QUEUE

log = structlog.get_logger(__name__)

LOG_FILE = "demo.log"
FEE_BPS = 100  # the platform fee the story's arithmetic expects (1 %)
WORKER_CONCURRENCY = 4


@dataclass
class Demo:
    client: httpx.AsyncClient
    console: Console
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def check(self, step: str, ok: bool, detail: str) -> None:
        self.rows.append((step, ok, detail))
        if not ok:
            self.console.print(f"  [red]✗ {step}[/red]: {detail}", highlight=False)

    def heading(self, title: str) -> None:
        self.console.print(f"\n[bold]{title}[/bold]")


def demo_settings(settings: Settings) -> Settings:
    """The demo's own choices, whatever the environment says: the intent signer its fresh
    routers were deployed with, a 1 % fee, webhooks to this machine, no cooling-off for
    the payout address, a fast sender and the dev keys in a keystore of its own."""
    return settings.model_copy(
        update={
            "intent_signer_key": DEV_PRIVATE_KEYS[0],
            "fee_bps": FEE_BPS,
            "spread_bps": 0,
            "payout_fee_bps": 0,
            "fx_rates": "USDC/USD=1,DAI/USD=1",
            "fx_feeds": "",
            "webhook_allow": "127.0.0.1/32",
            "destination_cooling_off_s": 0,
            "tx_poll_interval_ms": 100,
            "treasury_low_whole_tokens": 0,  # the demo's treasury starts empty: no alert
            "keystore_dir": settings.data_dir / "demo-keystore",
            "keystore_passphrase": DEV_PASSPHRASE,
            "kms_key_ids": "",
        }
    )


async def run_demo(url: str, settings: Settings, port: int, console: Console) -> bool:
    settings = _dev_keystore(demo_settings(settings))
    log_path = settings.data_dir / LOG_FILE
    started = time.monotonic()
    db = Database.connect(url, settings)
    try:
        with _logging_to(log_path):
            async with demo_chain.claimed_chain_id(db) as chain_id, demo_chain.running(chain_id) as chain:
                result = await _run(db, url, settings, port, chain, console)
    finally:
        await db.dispose()
    return _summary(result, time.monotonic() - started, log_path)


@dataclass
class Outcome:
    """What the summary shows besides the checks."""

    story: Story | None = None
    payments: list[tuple[str, Any]] = field(default_factory=list)
    deliveries: list[Any] = field(default_factory=list)
    verified_by_type: dict[str, int] = field(default_factory=dict)
    view: LedgerView | None = None


async def _run(
    db: Database, url: str, settings: Settings, port: int, chain: demo_chain.DemoChain, console: Console
) -> tuple[Demo, Outcome]:
    outcome = Outcome()
    with demo_receiver.running() as receiver:
        async with (
            serving(url, settings, "127.0.0.1", port, [chain.config]) as api,
            httpx.AsyncClient(base_url=api.base_url, timeout=30) as client,
        ):
            demo = Demo(client, console)
            _intro(demo, chain, api.base_url)
            await _setup(db, settings, demo)
            await _conventions(demo, db, url, settings)
            endpoint_id = await _endpoint(demo, receiver)
            async with (
                _background(url, settings, chain.config) as alive,
                httpx.AsyncClient(base_url=api.base_url, timeout=30, headers=demo.auth("test")) as merchant_api,
            ):
                story = Story(merchant_api, db, settings, chain, demo.ids["merchant"], console, demo.check, alive)
                outcome.story = story
                if await _tell(demo, story):
                    await _afterwards(demo, story, endpoint_id, receiver, outcome)
            await _revocation(demo, db)
            await _ops(demo)
    return demo, outcome


def _intro(demo: Demo, chain: demo_chain.DemoChain, base_url: str) -> None:
    c = chain.config
    demo.console.print(
        f"[bold]Stablegate demo[/bold]: a fresh local chain [cyan]{c.name}[/cyan] (chain id {c.chain_id}, "
        f"anvil {chain.net.anvil.url}) with our contracts, the API on {base_url}, "
        "a worker, a block follower and the sender.",
        highlight=False,
    )


# --- set-up and the API's conventions ----------------------------------------------------


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


async def _conventions(demo: Demo, db: Database, url: str, settings: Settings) -> None:
    demo.heading("API conventions")
    before = len(demo.rows)
    await _account_and_idempotency(demo)
    await _pagination(demo)
    await _isolation_and_errors(demo)
    await _outbox(demo, db, url, settings)
    done = demo.rows[before:]
    demo.console.print(
        f"  {sum(ok for _, ok, _ in done)}/{len(done)} checks: idempotent retries, cursor pagination, "
        "tenant isolation, errors naming the parameter, a job through the outbox",
        highlight=False,
    )


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


async def _outbox(demo: Demo, db: Database, url: str, settings: Settings) -> None:
    """A job enqueued in a domain transaction, run by a worker (before the story's worker
    starts: one worker per process holds the job runtime)."""
    async with db.session() as session:
        job_id = await outbox.enqueue(session, purge_idempotency_keys, timestamp=int(time.time()))
    await run_worker(url, settings, concurrency=1, wait=False, install_signal_handlers=False, queues=["system"])
    async with db.session() as session:
        status = await session.scalar(text("SELECT status FROM procrastinate_jobs WHERE id = :id"), {"id": job_id})
    demo.check("job via outbox + worker", status == "succeeded", f"job {job_id} {status}")


async def _endpoint(demo: Demo, receiver: demo_receiver.Receiver) -> str:
    """The merchant's webhook endpoint, before anything it should hear about happens."""
    r = await demo.client.post("/v1/webhook_endpoints", json={"url": receiver.url}, headers=demo.auth("test"))
    ok = r.status_code == 200
    demo.check("POST /v1/webhook_endpoints", ok, f"{receiver.url}" if ok else r.text[:200])
    if not ok:
        return ""
    receiver.secret = r.json()["secret"]
    return str(r.json()["id"])


async def _revocation(demo: Demo, db: Database) -> None:
    async with db.session() as session:
        await merchants.revoke_key(session, demo.ids["key_readonly"])
    r = await demo.client.get("/v1/customers", headers=demo.auth("readonly"))
    demo.check("revoked key", r.status_code == 401, f"next request → {r.status_code}")


async def _ops(demo: Demo) -> None:
    ready = await demo.client.get("/readyz")
    metrics = (await demo.client.get("/metrics")).text
    demo.check("/readyz", ready.status_code == 200, str(ready.json().get("migration")))
    demo.check("/metrics", "stablegate_http_requests_total" in metrics, "per-route request counters and latency")


# --- the processes and the story ------------------------------------------------------------


@contextlib.asynccontextmanager
async def _background(url: str, settings: Settings, chain: ChainConfig) -> AsyncIterator[Any]:
    """The worker (webhook deliveries), the block follower and the sender, as `stablegate
    dev` runs them; yields a function that raises if one of them has stopped."""
    import stablegate.payments.receipts  # registers its chain-event subscriber
    import stablegate.rails.service  # noqa: F401 (registers its chain-event subscriber)
    from stablegate.chains.watcher import follow_forever
    from stablegate.settlement.sender import run as sender_run

    stop = asyncio.Event()
    chain_db = Database.connect(url, settings)
    worker = run_worker(
        url, settings, concurrency=WORKER_CONCURRENCY, install_signal_handlers=False, queues=[WEBHOOK_QUEUE]
    )
    tasks = {
        "worker": asyncio.create_task(worker),
        "follower": asyncio.create_task(follow_forever(chain_db, chain, stop)),
        "sender": asyncio.create_task(sender_run(url, settings, [chain], None, stop)),
    }

    def alive() -> None:
        for name, task in tasks.items():
            if task.done():
                error = task.exception() if not task.cancelled() else None
                raise StoryFailed(f"the {name} stopped: {error!r}")

    try:
        yield alive
    finally:
        stop.set()
        await cancel_and_wait(tasks["worker"])
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await chain_db.dispose()


async def _tell(demo: Demo, story: Story) -> bool:
    """The story's steps in order; the first that cannot go on ends it (the summary says why)."""
    steps = story.steps()
    for number, step in enumerate(steps, 1):
        title = (step.__doc__ or step.__name__).strip()
        demo.heading(f"{number}/{len(steps)} {title}")
        try:
            await step()
        except Exception as exc:  # the summary reports it; the log keeps the stack
            log.exception("demo.step_failed", step=title)
            demo.check(title, False, str(exc) if isinstance(exc, StoryFailed) else f"{type(exc).__name__}: {exc}")
            return False
    return True


async def _afterwards(
    demo: Demo, story: Story, endpoint_id: str, receiver: demo_receiver.Receiver, outcome: Outcome
) -> None:
    demo.heading("Webhooks, ledger and chain")
    try:
        outcome.deliveries = await story.webhooks_delivered(endpoint_id, receiver)
        events = await story.list_all("/v1/events")
        for how, payment_id in story.payments.items():
            outcome.payments.append((how, await story.call("GET", f"/v1/payments/{payment_id}")))
        await story.balance_ties_out("balance after the payout")
        outcome.view = await story.ledger_and_chain()
    except Exception as exc:  # as in _tell
        log.exception("demo.summary_failed")
        demo.check("after the story", False, f"{type(exc).__name__}: {exc}")
        return
    outcome.verified_by_type = dict(receiver.verified_by_type())
    _webhook_checks(demo, outcome.deliveries, events, receiver)
    _tie_out_checks(demo, story, outcome.view)


def _webhook_checks(demo: Demo, deliveries: list[Any], events: list[Any], receiver: demo_receiver.Receiver) -> None:
    failures = receiver.failures()
    verified = receiver.verified_ids()
    delivered = {d["id"] for d in deliveries if d["status"] == "succeeded"}
    demo.check(
        "webhooks delivered",
        len(delivered) == len(deliveries) and delivered <= verified,
        f"{len(delivered)}/{len(deliveries)} deliveries answered 200 by the merchant's receiver",
    )
    demo.check(
        "webhook signatures",
        not failures and len(verified) >= len(deliveries),
        "all verified by the standardwebhooks package"
        if not failures
        else f"{len(failures)} failed: {failures[0].error}",
    )
    covered = {d["event"] for d in deliveries} == {e["id"] for e in events}
    demo.check("every event sent", covered, f"{len(events)} events (GET /v1/events), one delivery each")


def _tie_out_checks(demo: Demo, story: Story, view: LedgerView) -> None:
    e = story.expect
    demo.check(
        "fee revenue",
        view.fee_revenue == e.revenue and view.pending == 0,
        f"ledger {usdc(view.fee_revenue)} = expected {usdc(e.revenue)}; nothing left pending",
    )
    for label, in_ledger, on_chain, expected in (
        ("clearing after the sweep", view.clearing, view.chain_deposits, e.clearing),
        ("treasury: ledger = chain", view.treasury, view.chain_treasury, e.treasury),
        ("fee wallet: ledger = chain", view.fee_wallet, view.chain_fee_wallet, e.router_fees),
    ):
        detail = f"ledger {usdc(in_ledger)} = on chain {usdc(on_chain)} = expected {usdc(expected)}"
        demo.check(label, in_ledger == on_chain == expected, detail)
    demo.check(
        "the books balance",
        view.ledger_tokens == view.chain_tokens == view.merchant_available + view.fee_revenue,
        f"tokens held {usdc(view.chain_tokens)} = owed to merchants {usdc(view.merchant_available)}"
        f" + fee revenue {usdc(view.fee_revenue)}",
    )


# --- the summary ---------------------------------------------------------------------------


def _summary(result: tuple[Demo, Outcome], elapsed_s: float, log_path: Path) -> bool:
    demo, outcome = result
    console = demo.console
    console.print()
    if outcome.payments:
        console.print(_payments_table(outcome.payments))
    if outcome.deliveries:
        console.print(_webhooks_table(outcome.verified_by_type, outcome.deliveries))
    if outcome.view is not None and outcome.story is not None:
        console.print(_ledger_table(outcome.story, outcome.view))
    if outcome.story is not None and outcome.story.txs:
        console.print(_transactions_table(outcome.story.txs))
    table = Table("check", "", "what happened", title="Checks")
    for step, ok, detail in demo.rows:
        table.add_row(step, "[green]✓[/green]" if ok else "[red]✗[/red]", detail)
    console.print(table)
    passed = sum(ok for _, ok, _ in demo.rows)
    console.print(
        f"merchant {demo.ids.get('merchant', '?')} · ran in {elapsed_s:.0f}s · logs in {log_path} · "
        f"{passed}/{len(demo.rows)} checks passed",
        highlight=False,
    )
    return passed == len(demo.rows) and outcome.view is not None


def _payments_table(payments: list[tuple[str, Any]]) -> Table:
    table = Table("payment", "paid by", "price", "status", title="Payments")
    for how, p in payments:
        table.add_row(p["id"], how, f"{p['amount']} {p['currency']}", f"{p['status']} ({p['paid']})")
    return table


def _webhooks_table(by_type: dict[str, int], deliveries: list[Any]) -> Table:
    sent: dict[str, int] = {}
    for d in deliveries:
        sent[d["event_type"]] = sent.get(d["event_type"], 0) + 1
    table = Table("event", "sent", "verified", title="Webhooks (Standard Webhooks signatures)")
    for event_type in sorted(sent):
        table.add_row(event_type, str(sent[event_type]), str(by_type.get(event_type, 0)))
    table.add_row("[bold]all[/bold]", str(len(deliveries)), str(sum(by_type.values())))
    return table


def _ledger_table(story: Story, v: LedgerView) -> Table:
    e = story.expect
    table = Table("USDC", "ledger", "on chain", "expected", title="Ledger and chain")
    table.add_row("merchant available", usdc(v.merchant_available), "—", usdc(e.available))
    table.add_row("  … GET /v1/balance", usdc(v.api_available), "—", usdc(e.available))
    table.add_row("platform fee revenue", usdc(v.fee_revenue), "—", usdc(e.revenue))
    table.add_row("clearing (deposit addresses)", usdc(v.clearing), usdc(v.chain_deposits), usdc(e.clearing))
    table.add_row("treasury (hot wallet)", usdc(v.treasury), usdc(v.chain_treasury), usdc(e.treasury))
    table.add_row("fee wallet", usdc(v.fee_wallet), usdc(v.chain_fee_wallet), usdc(e.router_fees))
    table.add_row("[bold]tokens held[/bold]", usdc(v.ledger_tokens), usdc(v.chain_tokens), "")
    return table


def _transactions_table(txs: list[Tx]) -> Table:
    table = Table("transaction", "tx", "block", "", title="On-chain transactions")
    for tx in txs:
        table.add_row(tx.what, short(tx.tx_hash), str(tx.block or "—"), "ok" if tx.ok else "reverted")
    return table


# --- plumbing --------------------------------------------------------------------------------


def _dev_keystore(settings: Settings) -> Settings:
    """The local chain's operator and treasury keys (anvil's public dev keys 0 and 1), in
    an encrypted keystore of the demo's own in the data dir, written once."""
    directory = settings.resolved_keystore_dir()
    if not any(directory.glob("dev-*.json")):
        write_dev_keystore(directory)
    return settings


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """The processes' logs go to a file, so the console shows the story; the file says
    what happened in detail when a check fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sink: IO[str]
    with path.open("w", encoding="utf-8") as sink:
        obs_logging.configure("INFO", "json")
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sink))
        root = logging.getLogger()
        saved = root.handlers[:]
        root.handlers = [logging.StreamHandler(sink)]
        try:
            yield
        finally:
            root.handlers = saved
            obs_logging.configure("WARNING", "json")
