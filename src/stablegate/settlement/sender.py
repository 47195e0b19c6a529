"""`stablegate sender`: the transaction manager's loops — one per configured chain and
signer we hold a key for (the chain's treasury signs payouts and refunds, its operator
signs sweeps) — until SIGINT or SIGTERM. Several sender processes may run: per (chain,
signer) one leads (advisory lock) and the others stand by.

Keys come from an encrypted keystore directory (`stablegate dev` writes one) and/or AWS
KMS; the API process never loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path

import structlog
from prometheus_client import start_http_server

from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.registry import ChainConfig
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.settlement import service, sweeps
from stablegate.settlement.signers import Signer, kms_signers, load_keystore_dir, write_keystore
from stablegate.settlement.txmanager import FeePolicy, TxManager

log = structlog.get_logger(__name__)
RESTART_DELAY_S = 5.0
DEV_PASSPHRASE = "stablegate-dev"  # noqa: S105 (anvil's public keys; never a real secret)
DEV_KDF_ITERATIONS = 2**14  # scrypt N; dev keys are public anyway: keep start-up fast


def load_signers(settings: Settings) -> dict[str, Signer]:
    """Every key this process may sign with, by lower-case address."""
    signers: dict[str, Signer] = {}
    directory = settings.resolved_keystore_dir()
    if directory.is_dir() and any(directory.glob("*.json")):
        if not settings.keystore_passphrase:
            raise ValueError(f"keystore {directory} found but STABLEGATE_KEYSTORE_PASSPHRASE is not set")
        signers |= load_keystore_dir(directory, settings.keystore_passphrase)
    key_ids = [k.strip() for k in settings.kms_key_ids.split(",") if k.strip()]
    if key_ids:
        signers |= kms_signers(key_ids, settings.aws_region)
    return signers


def write_dev_keystore(directory: Path) -> list[str]:
    """The local chain's operator (anvil key 0) and treasury (key 1), encrypted with the
    dev passphrase: what `stablegate dev` and `demo` sign with."""
    return [
        write_keystore(directory / f"dev-{i}.json", key, DEV_PASSPHRASE, kdf_iterations=DEV_KDF_ITERATIONS)
        for i, key in enumerate(DEV_PRIVATE_KEYS[:2])
    ]


def managers(
    db: Database, settings: Settings, chains: Sequence[ChainConfig], signers: dict[str, Signer]
) -> list[TxManager]:
    """One manager per (chain, role address) whose key we hold."""
    result = []
    for chain in chains:
        for address in sorted({a for a in (chain.treasury, chain.operator) if a}):
            if address in signers:
                result.append(TxManager(db, chain, signers[address], FeePolicy.from_settings(settings, chain)))
            else:
                log.warning("sender.no_key", chain=chain.name, address=address)
    return result


async def manage_forever(manager: TxManager, stop: asyncio.Event, poll_interval_s: float) -> None:
    """A loop that survives database and provider outages: it restarts after any failure."""
    while not stop.is_set():
        try:
            await manager.run(stop, poll_interval_s)
        except Exception:  # a sender outlives any one failure; logged with the stack
            log.exception("sender.crashed", chain=manager.chain.name, signer=manager.address)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY_S)


async def run(
    url: str,
    settings: Settings,
    chains: Sequence[ChainConfig],
    metrics_port: int | None,
    stop: asyncio.Event | None = None,
) -> None:
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    register_owners(settings, chains)
    db = Database.connect(url, settings)
    loops = managers(db, settings, chains, load_signers(settings))
    try:
        log.info("sender.started", loops=[(m.chain.name, m.address) for m in loops])
        poll_interval_s = settings.tx_poll_interval_ms / 1000
        await asyncio.gather(*(manage_forever(m, stop, poll_interval_s) for m in loops))
    finally:
        for m in loops:
            await m.rpc.aclose()
        await db.dispose()
        log.info("sender.stopped")


def register_owners(settings: Settings, chains: Sequence[ChainConfig]) -> None:
    """Payouts, refunds and sweeps own their transactions' outcomes."""
    service.register(service.Context.from_settings(settings, chains))
    sweeps.register(chains)
