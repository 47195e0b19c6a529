"""Webhook delivery throughput: the real worker against raw httpx, same receiver, same
concurrency, one run.

    .venv/bin/python bench/webhooks.py [--deliveries 2000] [--concurrency 16] [--repeats 3]

Set-up: a fresh database (DATABASE_URL's server, else the embedded PostgreSQL), a receiver
in its own process (uvicorn, a bare ASGI app answering 200 "ok" to everything) on
127.0.0.1, and a merchant with endpoints on it.

- (a) raw: `concurrency` tasks share one httpx.AsyncClient and POST the same signed body
  to the receiver until `deliveries` requests are done: the floor cost of sending.
- (b) worker: `deliveries` events are emitted (not timed), then the real worker
  (`run_worker`, queue "webhooks", the same concurrency: its webhook dispatcher) runs until
  the database has settled them all (every delivery must end `succeeded`). Each delivery
  is: claimed in a batch (leased, with everything the attempt needs), signed, SSRF
  checked, POSTed, and recorded in a batch of successes.
  Three shapes: one endpoint with the default per-endpoint bound (4 in flight), one
  endpoint with the bound at the worker's concurrency, and 16 endpoints (the realistic
  case: many merchants) with the default bound.

Target: (b) ≥ 0.5× (a) in deliveries/s. Medians over repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stablegate import migrations
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.jobs.app import run_worker
from stablegate.kit.net import free_port
from stablegate.merchants import service as merchants
from stablegate.merchants.service import SCOPES, Principal
from stablegate.observability import logging as obs_logging

# Imported before anything is measured (module set-up stays outside the timings).
from stablegate.webhooks import delivery as _delivery  # noqa: F401
from stablegate.webhooks import service, signing
from stablegate.webhooks.schemas import WebhookEndpointCreate
from tests.conftest import admin_url, recreate_database

BENCH_DB = "stablegate_bench_webhooks"
EMIT_BATCH = 250
RECEIVER = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""
SAMPLE = {"id": "pay_01JBENCH", "object": "payment", "amount": "125.00", "currency": "usd", "status": "succeeded"}


def start_receiver(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("receiver did not start")


async def raw(url: str, n: int, concurrency: int) -> float:
    """Requests/s of bare httpx POSTs with the same body and headers as a delivery."""
    body = service.canonical_json({"id": "evt_x", "object": "event", "data": {"object": SAMPLE}})
    secret = signing.new_secret()
    remaining = [n]
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(limits=limits, timeout=15, trust_env=False) as client:

        async def loop() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                headers = signing.headers([secret], "msg_x", int(time.time()), body)
                r = await client.post(url, content=body, headers={**headers, "content-type": "application/json"})
                assert r.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


async def make_endpoints(db: Database, url: str, count: int) -> list[Principal]:
    owners = []
    async with db.session() as session:
        for n in range(count):
            merchant = await merchants.create_merchant(session, f"Bench {n}")
            owner = Principal(merchant.id, "test", "key_bench", "secret", SCOPES)
            params = WebhookEndpointCreate(url=f"{url}hook/{n}")
            await service.create_endpoint(session, owner, params, ("127.0.0.1",))
            owners.append(owner)
    return owners


async def worker_run(db: Database, url: str, settings: Settings, owners: list[Principal], n: int, c: int) -> float:
    for start in range(0, n, EMIT_BATCH):
        async with db.session() as session:
            for i in range(start, min(n, start + EMIT_BATCH)):
                owner = owners[i % len(owners)]
                await service.emit(
                    session,
                    merchant_id=owner.merchant_id,
                    mode="test",
                    type="payment.succeeded",
                    object_id=SAMPLE["id"],
                    data=SAMPLE,
                )
    started = time.perf_counter()
    # wait=True, stopped once every delivery settled: the time to notice that is the same
    # for any worker (a 20 ms poll of the database).
    worker = asyncio.create_task(
        run_worker(db.url, settings, concurrency=c, install_signal_handlers=False, queues=["webhooks"])
    )
    while await pending(db) > 0:
        assert not worker.done(), "worker stopped"
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    return n / elapsed


async def pending(db: Database) -> int:
    async with db.session() as session:
        count = await session.scalar(text("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"))
    assert isinstance(count, int)
    return count


async def run(args: argparse.Namespace) -> None:
    obs_logging.configure("WARNING")  # as production would at its log level; INFO lines cost per delivery
    url = recreate_database(admin_url(), BENCH_DB)
    migrations.upgrade(url)
    port = free_port()
    receiver = start_receiver(port)
    base = f"http://127.0.0.1:{port}/"
    base_settings = {"webhook_allow": "127.0.0.1", "log_level": "WARNING"}
    shapes = {
        "1 endpoint, bound 4 (default)": (1, Settings(**base_settings)),
        f"1 endpoint, bound {args.concurrency}": (
            1,
            Settings(**base_settings, webhook_endpoint_concurrency=args.concurrency),
        ),
        "16 endpoints, bound 4 (default)": (16, Settings(**base_settings)),
    }
    db = Database.connect(url, Settings())
    results: dict[str, list[float]] = {"raw httpx": [], **{name: [] for name in shapes}}
    try:
        owners = {name: await make_endpoints(db, base, count) for name, (count, _) in shapes.items()}
        for _ in range(args.repeats):
            results["raw httpx"].append(await raw(base, args.deliveries, args.concurrency))
            for name, (_, settings) in shapes.items():
                rate = await worker_run(db, base, settings, owners[name], args.deliveries, args.concurrency)
                results[name].append(rate)
            async with db.session() as session:  # keep repeats alike: the jobs table stays small
                await session.execute(text("DELETE FROM procrastinate_jobs"))
    finally:
        await db.dispose()
        receiver.terminate()
        receiver.wait()
    report(results, args)


def report(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    baseline = medians["raw httpx"]
    print(
        f"webhooks: {args.deliveries} deliveries, concurrency {args.concurrency}, medians of {args.repeats} "
        "(receiver: uvicorn in its own process, 127.0.0.1)"
    )
    print(f"{'shape':38} {'deliveries/s':>13} {'vs raw':>8}")
    for name, rate in medians.items():
        print(f"{name:38} {rate:13.0f} {rate / baseline:7.2f}×")
    print("target: worker ≥ 0.5× raw httpx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
