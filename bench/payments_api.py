"""Creating payments: `POST /v1/payments` vs the hello-world route, same server, same run.

    .venv/bin/python bench/payments_api.py [--duration 5] [--repeats 3] [--connections 32]

A payment creation is the API's heaviest write: authentication, validation, an
idempotency claim, an FX quote per accepted token, a deposit address (CREATE2, watched),
an EIP-712 intent signed per token, the payment and its options, and its
`payment.created` event — one transaction. The server knows a real local chain (anvil
with our contracts deployed), two tokens (USDC, DAI) on it, so every payment gets two
quotes, one deposit address and two signed intents.

Same method as bench/api_overhead.py: one uvicorn worker pinned to core 0, the load
generator on core 1; medians over repeats. Target (issue #5): POST rps ≥ 0.25 × hello-world.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api_overhead import CPU_HEADER, HOST, LOADGEN_CPU, _pin, cpu_columns, measure_all, start_server, tenant_key
from bench.loadgen import request_factory
from stablegate import localnet, migrations
from stablegate.chains import registry
from stablegate.chains.anvil import DEV_PRIVATE_KEYS, Anvil
from stablegate.rails.deploy import deploy_local
from tests.conftest import admin_url, recreate_database


def endpoints(port: int, key: str) -> dict[str, object]:
    host = f"{HOST}:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    body = json.dumps(
        {"amount": "25.00", "currency": "USD", "reference": "order-1", "metadata": {"order": "1"}}
    ).encode()
    return {
        "hello-world GET /healthz": request_factory("GET", "/healthz", host, {}),
        # The simplest idempotent write (one domain statement), for scale.
        "POST /v1/customers": request_factory("POST", "/v1/customers", host, auth, b"{}", idempotent=True),
        "POST /v1/payments (2 tokens)": request_factory("POST", "/v1/payments", host, auth, body, idempotent=True),
    }


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
    tmp = Path(tempfile.mkdtemp(prefix="stablegate-bench-"))
    with Anvil() as anvil:
        stack = deploy_local(anvil.url)
        chains_file = tmp / "chains.json"
        chains_file.write_text(json.dumps([registry.to_dict(localnet.chain_config(stack, anvil.url))]))
        env = {"STABLEGATE_CHAINS_FILE": str(chains_file), "STABLEGATE_INTENT_SIGNER_KEY": DEV_PRIVATE_KEYS[0]}
        proc = start_server(url, port, tmp / "server.log", env)
        if args.profile:  # py-spy the server for the whole run (collapsed stacks)
            out = tmp / "payments_api.folded"
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            command = [py_spy, "record", "-p", str(proc.pid), "-o", str(out), "-r", "200", "--format", "raw"]
            await asyncio.to_thread(subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"profiling the server into {out}")
        try:
            results = await measure_all(port, endpoints(port, key), args, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    report(results, args)


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    shape = f"{args.connections} connections, {args.duration:.0f}s × {args.repeats}"
    print(f"payments_api: 1 uvicorn worker, {shape} (medians)")
    print(f"{'endpoint':32} {'peak rps':>9} {'p50@70%':>9} {'p99@70%':>9} {'errors':>7}  {CPU_HEADER}")
    for name, r in results.items():
        line = f"{name:32} {r['rps']:9.0f} {r['p50_ms']:8.2f}ms {r['p99_ms']:8.2f}ms {r['errors']:7.0f}"
        print(f"{line}  {cpu_columns(r)}")
    hello = results["hello-world GET /healthz"]["rps"]
    post = results["POST /v1/payments (2 tokens)"]["rps"]
    customers = results["POST /v1/customers"]["rps"]
    print(f"ratio POST /v1/customers / hello-world = {customers / hello:.2f}×   (the pipeline's floor)")
    print(f"ratio POST /v1/payments / hello-world = {post / hello:.2f}×   (target ≥ 0.25×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement (median reported)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument("--profile", action="store_true", help="record the server with py-spy (needs py-spy)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
