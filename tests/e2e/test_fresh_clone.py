"""The README's two commands work in a fresh clone: set-up from nothing (uv, .venv from
uv.lock), a new embedded PostgreSQL data directory, no DATABASE_URL. Then the same smoke
run against the machine's PostgreSQL server through DATABASE_URL, when one is reachable.

This checks what is *committed* (git clone of HEAD)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SERVER = ("127.0.0.1", 5432)
COMMAND_TIMEOUT_S = 900


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-6000:]}"
    return output


def _local_server_up() -> bool:
    try:
        with socket.create_connection(LOCAL_SERVER, timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_readme_commands_in_a_fresh_clone() -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    # Not under tmp_path: every pytest run re-tightens its temp root to 0700, which would
    # lock the embedded server's unprivileged user out of the binaries in the clone's .venv
    # and out of the data dir. The nested runs get a --basetemp of their own for the same reason.
    data_root = Path(tempfile.mkdtemp(prefix="stablegate-e2e-"))
    clone = data_root / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV", "STABLEGATE_SECRET_KEY")}
    env |= {"STABLEGATE_DATA_DIR": str(data_root / "data"), "STABLEGATE_TEST_DB_SUFFIX": "_clone"}
    smoke_cmd = ["bin/test", "tests/e2e/test_smoke.py", "-p", "no:cacheprovider", f"--basetemp={data_root / 'pytest'}"]

    try:
        demo = _run(["bin/demo"], clone, env)
        assert "checks passed" in demo and "✗" not in demo

        smoke = _run(smoke_cmd, clone, env)
        assert "1 passed" in smoke

        if _local_server_up():
            external = env | {"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}
            smoke = _run(smoke_cmd, clone, external)
            assert "1 passed" in smoke
    finally:
        # The embedded server stops with its last user; make sure no test leaves one behind.
        if (clone / ".venv/bin/stablegate").exists():
            subprocess.run(
                [str(clone / ".venv/bin/stablegate"), "db", "stop"], env=env, capture_output=True, timeout=60
            )
        leftover = subprocess.run(["pgrep", "-f", f"postgres -D {data_root}"], capture_output=True, text=True).stdout
        log_path = data_root / "data" / "pg" / "log"
        log_tail = log_path.read_text()[-3000:] if log_path.exists() else ""
        if leftover.strip():
            subprocess.run(["pkill", "-f", f"postgres -D {data_root}"], check=False)
        shutil.rmtree(data_root, ignore_errors=True)
        assert not leftover.strip(), f"the embedded PostgreSQL outlived the commands that used it:\n{log_tail}"
