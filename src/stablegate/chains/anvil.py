"""The local chain: anvil from the npm package @foundry-rs/anvil, installed by bin/setup
into the checkout's node_modules (never a global install).

`Anvil` starts one on a free loopback port in its own process group, waits until it
answers JSON-RPC, and stops it. Chain id 31337 and anvil's well-known development
mnemonic: its accounts are public test keys, funded only on this local chain.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog

from stablegate.kit.net import free_port

log = structlog.get_logger(__name__)

LOCAL_CHAIN_ID = 31337
# anvil's default development accounts (public; anvil prints them at start). Account 0
# deploys and operates the local stack; the others act as payers in tests and the demo.
DEV_PRIVATE_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def binary() -> Path:
    """The anvil installed by bin/setup (STABLEGATE_ANVIL overrides, e.g. for a packaged image)."""
    override = os.environ.get("STABLEGATE_ANVIL")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[3] / "node_modules" / ".bin" / "anvil"
    if checkout.exists():
        return checkout
    found = shutil.which("anvil")
    if found is None:
        raise FileNotFoundError("anvil not found: run bin/setup (it installs @foundry-rs/anvil from npm)")
    return Path(found)


@dataclass
class Anvil:
    """One anvil process. `block_time_s=None` mines a block per transaction (instant);
    a number mines on that interval as a real chain does."""

    port: int = field(default_factory=free_port)
    chain_id: int = LOCAL_CHAIN_ID
    block_time_s: float | None = None
    state_path: Path | None = None
    accounts: int = 10
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(binary()), "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(self.chain_id)]
        cmd += ["--accounts", str(self.accounts), "--silent"]
        if self.block_time_s is not None:
            cmd += ["--block-time", f"{self.block_time_s:g}"]
        if self.state_path is not None:
            # --state loads the file if present and dumps to it on exit: the chain survives restarts.
            cmd += ["--state", str(self.state_path)]
        return [*cmd, *self.extra_args]

    def start(self) -> Anvil:
        assert self.process is None, "already started"
        self.process = subprocess.Popen(  # noqa: S603 (our own binary and arguments)
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait_ready()
        log.info("anvil.started", url=self.url, pid=self.process.pid, chain_id=self.chain_id)
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"anvil exited with {self.process.returncode}: {err[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                reply = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=1.0)
                if reply.status_code == 200 and int(reply.json()["result"], 16) == self.chain_id:
                    return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"anvil did not answer on {self.url} within {START_TIMEOUT_S:g}s")

    def stop(self) -> None:
        """SIGTERM to the process group (anvil dumps --state on it), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        log.info("anvil.stopped", url=self.url)

    def __enter__(self) -> Anvil:
        return self.start() if self.process is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
