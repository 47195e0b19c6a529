"""Run the API (and the worker) inside the current event loop: `dev` and `demo` use it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn

from stablegate import localnet
from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.registry import ChainConfig
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.kit.net import free_port
from stablegate.kit.tasks import cancel_and_wait
from stablegate.main import create_app
from stablegate.observability import tracing

STARTUP_TIMEOUT_S = 20.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a loop we own: signals are ours (run_dev), not uvicorn's, which would
    re-raise them into the loop after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Serving:
    base_url: str
    task: asyncio.Task[None]
    server: uvicorn.Server


@asynccontextmanager
async def serving(
    url: str, settings: Settings, host: str, port: int, chains: Sequence[ChainConfig] | None = None
) -> AsyncIterator[Serving]:
    """Serve the API until the block exits (or the server stops on a signal)."""
    db = Database.connect(url, settings)
    tracing.instrument_engine(db.engine.sync_engine)
    port = port or free_port(host)
    if "STABLEGATE_PUBLIC_URL" not in os.environ:  # checkout links point at this server
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
    config = uvicorn.Config(
        create_app(settings, db, chains), host=host, port=port, log_level="warning", access_log=False
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield Serving(f"http://{host}:{port}", task, server)
    finally:
        server.should_exit = True
        await task
        await db.dispose()


async def run_dev(url: str, settings: Settings, host: str, port: int) -> None:
    import stablegate.payments.receipts  # registers its chain-event subscriber
    import stablegate.rails.service  # noqa: F401 (registers its chain-event subscriber)

    # Signals stop everything gracefully from here on, startup included: a SIGTERM while
    # the dev merchant is being prepared must not tear the event loop down mid-request.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    state = settings.data_dir / "anvil-state.json"
    with localnet.running(port=settings.anvil_port, state_path=state) as net:
        # The local routers were deployed by anvil's dev key #0: it signs the intents.
        settings = settings.model_copy(update={"intent_signer_key": settings.intent_signer_key or DEV_PRIVATE_KEYS[0]})
        async with serving(url, settings, host, port, [net.chain]) as api:
            stopper = asyncio.create_task(_stop_serving_on(stop, api))
            try:
                await _print_dev(url, settings, api.base_url, net)
            except Exception:
                if not stop.is_set():
                    raise  # a real failure; one caused by stopping mid-way is not
            if not stop.is_set():  # a signal during the printout: nothing more to start
                await _run_background(url, settings, net, api, stop)
            await stopper


async def _run_background(
    url: str, settings: Settings, net: localnet.LocalNet, api: Serving, stop: asyncio.Event
) -> None:
    """The worker, the block follower and the sender beside the API; whichever stops first
    (a signal stops the API), the others follow."""
    from stablegate.chains.watcher import follow_forever
    from stablegate.jobs.app import run_worker
    from stablegate.settlement.sender import run as sender_run

    signing = _dev_signing(settings)  # before any task starts: a failure here leaves none running
    worker = asyncio.create_task(run_worker(url, settings, concurrency=2, install_signal_handlers=False))
    chain_db = Database.connect(url, settings)
    follower = asyncio.create_task(follow_forever(chain_db, net.chain, stop))
    sender = asyncio.create_task(sender_run(url, signing, [net.chain], None, stop))
    await asyncio.wait({api.task, worker, follower, sender}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await cancel_and_wait(worker)
    await asyncio.gather(follower, sender, return_exceptions=True)
    await chain_db.dispose()


async def _stop_serving_on(stop: asyncio.Event, api: Serving) -> None:
    await stop.wait()
    api.server.should_exit = True


def _dev_signing(settings: Settings) -> Settings:
    """The local chain's operator and treasury keys in an encrypted keystore in the data
    dir (written once), unless keys are configured: the sender signs payouts with them."""
    from stablegate.settlement.sender import DEV_PASSPHRASE, write_dev_keystore

    if settings.keystore_passphrase or settings.kms_key_ids:
        return settings
    directory = settings.resolved_keystore_dir()
    if not any(directory.glob("dev-*.json")):
        write_dev_keystore(directory)
    return settings.model_copy(update={"keystore_passphrase": DEV_PASSPHRASE, "keystore_dir": directory})


async def _print_dev(url: str, settings: Settings, base_url: str, net: localnet.LocalNet) -> None:
    from stablegate import dev_merchant

    s = net.stack
    print(f"stablegate dev: API on {base_url} (docs {base_url}/docs), worker, block follower and sender running")
    print(f"  local chain: {net.anvil.url} (chain id {s.chain_id}, a block a second; state kept between runs)")
    print(f"  USDC {s.usdc} · DAI {s.dai} · router {s.router} · deposit factory {s.factory}")
    print(f"  funded payer: {s.payers[0]} (anvil's well-known dev key #3; 1,000,000 USDC and DAI)")
    print(f"  treasury (payouts, refunds): {s.treasury} · sweep operator: {s.deployer} (dev keystore in the data dir)")
    try:
        start = await dev_merchant.prepare(url, settings, base_url, net.chain, s.payers[0])
    except Exception as exc:  # the printout is a convenience: dev runs without it
        print(f"  (no demo merchant: {type(exc).__name__}: {exc})")
    else:
        payment_id = start.payment["id"]
        print(f"  test API key: {start.merchant.key} (merchant {start.merchant.merchant_id}; kept in {start.path})")
        print(f"  a demo payment's checkout page: {base_url}/pay/{payment_id}")
        print("  pay it from the command line (anvil's dev accounts are unlocked; 3 blocks later it has succeeded):")
        print(f"    {start.pay_command}")
        print(f'    curl -s {base_url}/v1/payments/{payment_id} -H "Authorization: Bearer {start.merchant.key}"')
    print("  Ctrl-C stops everything; the next start reuses the database and the chain")
