"""The embedded PostgreSQL is started on demand and stopped when its last user exits,
including on SIGTERM (what a supervisor or `docker stop` sends) and after a user that
was killed outright left its pid behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stablegate.kit.net import free_port

START_TIMEOUT_S = 60.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's temp root, which is 0700 and would lock out the server's own user.
    root = Path(tempfile.mkdtemp(prefix="stablegate-lifecycle-"))
    yield root / "data"
    subprocess.run(["pkill", "-f", f"postgres -D {root}"], check=False)
    shutil.rmtree(root, ignore_errors=True)


def server_running(data_dir: Path) -> bool:
    return subprocess.run(["pgrep", "-f", f"postgres -D {data_dir}"], capture_output=True).returncode == 0


def output_path(data_dir: Path) -> Path:
    return data_dir.parent / "output.log"


def stopped(proc: subprocess.Popen[bytes], data_dir: Path, timeout_s: float = 60) -> None:
    """Wait for the process to exit; if it hangs, fail with where it hangs (py-spy, from
    the dev dependencies) and what it printed."""
    try:
        proc.wait(timeout=timeout_s)
        return
    except subprocess.TimeoutExpired:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        dump = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True, check=False)
        proc.kill()
        proc.wait()
    printed = output_path(data_dir).read_text(errors="replace")[-4000:]
    raise AssertionError(f"still running {timeout_s:g} s after SIGTERM\n{dump.stdout}{dump.stderr}\n{printed}")


def start(command: list[str], data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"STABLEGATE_DATA_DIR": str(data_dir)}
    with output_path(data_dir).open("ab") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stablegate", *command, "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{command} did not become ready")


@pytest.mark.parametrize("command", [["api", "--migrate"], ["dev"]], ids=["api", "dev"])
def test_sigterm_stops_the_embedded_server(data_dir: Path, command: list[str]) -> None:
    proc, _ = start(command, data_dir)
    assert server_running(data_dir)
    proc.send_signal(signal.SIGTERM)
    stopped(proc, data_dir)
    assert not server_running(data_dir), "the embedded PostgreSQL outlived its last user"


def test_a_killed_user_does_not_keep_the_server_alive(data_dir: Path) -> None:
    first, _ = start(["api", "--migrate"], data_dir)
    first.kill()  # SIGKILL: no atexit, its pid stays in the handle file
    first.wait(timeout=30)
    pid_file = data_dir / "pg" / ".handle_pids.json"
    assert first.pid in json.loads(pid_file.read_text())
    second, _ = start(["api"], data_dir)
    second.send_signal(signal.SIGTERM)
    stopped(second, data_dir)
    assert not server_running(data_dir)
