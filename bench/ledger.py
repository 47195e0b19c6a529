"""Ledger throughput against pgbench and a peer library, all measured in one run on one server.

    .venv/bin/python bench/ledger.py [--clients 8] [--duration 10] [--repeats 3] [--accounts 1000] [--batch 1000]

The server is DATABASE_URL's, else the embedded PostgreSQL (as for the tests). Each figure is
a closed loop: <clients> concurrent clients, each with its own connection, send back to back
for <duration> seconds; throughput counts only work that committed, over the wall time until
the last client finished. Connections are opened before the clock starts. Every measurement
is repeated and the median is printed (the single runs follow in brackets); repeats are
interleaved (pgbench, single, batched, hot, peer, then again) so that drift hits all alike.

- pgbench tpcb-like: the server's own pgbench (the one next to the running server),
  scale = clients, -j min(clients, 2), in database stablegate_bench_pgbench. Its TPS is the
  ceiling for "one small read-write transaction per round trip" on this machine.
- single: one transfer per database transaction through `ledger.post`, client
  chosen ids, uniform random (debit, credit) pairs among <accounts> accounts.
- batched: the same, <batch> transfers per call (one linked batch, one transaction). A
  batch locks most of the accounts, so concurrent batches mostly queue on each other.
- hot: every transfer credits one hot account (debit uniform random): all clients queue on
  one row lock.
- peer: django-hordak 2.x (`Account.transfer_to`, one atomic transaction per transfer:
  a Transaction and two Legs, checked by hordak's triggers) in stablegate_bench_hordak, same
  random pairs among <accounts> accounts, <clients> threads each with its own connection.
  Hordak has no client-chosen transfer id (so no idempotency check) and keeps no balance
  rows (balances are sums of legs), so it writes more rows but locks no account.
  The ledger's clients are asyncio tasks in one thread and the peer's are threads under
  one GIL, so both get one process of Python.

The asyncio clients run under uvloop when it is installed, as the API server does.
Each line ends with the single runs and the median CPU the load's client process used, in
cores (pgbench's own process; this process for the ledger and the peer): near 1.0 means
the Python client, not the server, is the limit (this is a 2-core machine class).
Each ledger transaction is one `ledger.post` call (a standalone batch; it retries itself
after a deadlock or serialization failure, which one call cannot cause), and any exception that reaches a client is
counted by type and printed. Targets (printed, not asserted): single ≥ 1.0x pgbench TPS,
batched ≥ 10x pgbench TPS, hot ≥ 0.5x single, single ≥ 10x django-hordak.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stablegate import migrations
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.ledger import service as ledger
from stablegate.ledger.service import Transfer
from tests.conftest import admin_url, recreate_database

LEDGER_DB = "stablegate_bench_ledger"
PGBENCH_DB = "stablegate_bench_pgbench"
HORDAK_DB = "stablegate_bench_hordak"
ASSET = "USD"
AMOUNT_MINOR = 100
PGBENCH_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 60.0
MAX_ERRORS_SHOWN = 5
TPS_LINE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)

# structlog events by name; every event is then dropped. Retries log one of RETRY_EVENTS.
LOG_EVENTS: Counter[str] = Counter()
RETRY_EVENTS = ("ledger.retry", "db.retry")


@dataclass
class Run:
    """One closed-loop measurement."""

    transfers: int
    elapsed_s: float
    client_cpu_s: float = 0.0  # CPU time of the load's client process (pgbench, or this one)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def per_s(self) -> float:
        return self.transfers / self.elapsed_s

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.elapsed_s


@dataclass
class Figure:
    """Every run of one measurement; the median is what is reported."""

    name: str
    unit: str
    runs: list[Run] = field(default_factory=list)
    retries: int = 0
    unavailable: str | None = None

    @property
    def median_per_s(self) -> float:
        return statistics.median(r.per_s for r in self.runs)

    @property
    def median_client_cores(self) -> float:
        return statistics.median(r.client_cores for r in self.runs)

    @property
    def errors(self) -> Counter[str]:
        return sum((r.errors for r in self.runs), Counter())


# --- logging: count the ledger's events, print none ---------------------------------------------


def _count_event(_logger: object, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    LOG_EVENTS[str(event.get("event"))] += 1
    raise structlog.DropEvent


def quiet_logs() -> None:
    structlog.configure(processors=[_count_event], cache_logger_on_first_use=True)


# --- pgbench ------------------------------------------------------------------------------------


def pgbench_binary(admin: str) -> str:
    """The pgbench of the running server's installation (pg_config's BINDIR), else a fallback."""
    with psycopg.connect(admin) as conn:
        row = conn.execute("SELECT setting FROM pg_config WHERE name = 'BINDIR'").fetchone()
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
    candidates = [Path(row[0]) / "pgbench"] if row else []
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin/pgbench"))
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which("pgbench")
    if found is None:
        raise RuntimeError(f"no pgbench for PostgreSQL {major} (looked in {[str(p) for p in candidates]})")
    return found


def pgbench_init(binary: str, url: str, scale: int) -> None:
    subprocess.run([binary, "-i", "-q", "-s", str(scale), url], check=True, capture_output=True, timeout=600)


def pgbench_run(binary: str, url: str, clients: int, duration_s: float) -> Run:
    seconds = max(1, round(duration_s))
    argv = [binary, "-b", "tpcb-like", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), url]
    cpu_before_s = _children_cpu_s()
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=seconds + PGBENCH_TIMEOUT_S)
    match = TPS_LINE.search(out.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps line:\n{out.stdout}\n{out.stderr}")
    tps = float(match.group(1))
    return Run(transfers=round(tps * seconds), elapsed_s=float(seconds), client_cpu_s=_children_cpu_s() - cpu_before_s)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the ledger ---------------------------------------------------------------------------------

MakeBatch = Callable[[str], list[Transfer]]


async def ledger_setup(url: str, accounts: int) -> tuple[list[int], int]:
    """Define the asset and open `accounts` accounts plus one hot account; return their ids."""
    db = Database.connect(url, Settings())
    try:
        async with db.session() as session:
            await ledger.define_asset(session, ASSET, 2)
            ids = [(await ledger.open_account(session, f"bench:a:{i}", ASSET, "asset")).id for i in range(accounts)]
            hot = await ledger.open_account(session, "bench:hot", ASSET, "liability")
        # As `pgbench -i` vacuums and analyzes its tables after loading them. Without
        # statistics (autovacuum had not come round yet) the first single-transfer run of
        # every bench ran at about half the rate of the later ones (1938 against 3700/s);
        # with them the first run is like the rest (3792/s).
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE ledger_accounts, ledger_transfers, ledger_assets")
        return ids, hot.id
    finally:
        await db.dispose()


def random_pair(ids: list[int]) -> tuple[int, int]:
    """Two distinct accounts, uniformly. Not random.sample: at 2.5 µs a pair, drawing a
    1000-transfer batch's pairs cost the client more than the ledger's own Python did."""
    first = int(random.random() * len(ids))
    second = int(random.random() * (len(ids) - 1))
    return ids[first], ids[second + (second >= first)]


def batch_maker(ids: list[int], size: int, hot: int | None = None) -> MakeBatch:
    """Transfers with ids prefix:0..size-1; credit the hot account if given, else a random pair."""

    def make(prefix: str) -> list[Transfer]:
        batch = []
        for n in range(size):
            debit, credit = (random.choice(ids), hot) if hot is not None else random_pair(ids)
            batch.append(Transfer(f"{prefix}:{n}", debit, credit, ASSET, AMOUNT_MINOR))
        return batch

    return make


async def _warm(db: Database, clients: int) -> None:
    """Open every client's connection before the clock starts: the ORM pool's and the
    statement pool's (`ledger.post` sends its one statement through the latter)."""
    from sqlalchemy import text

    async def one() -> None:
        async with db.session() as session, db.statements.connection() as driver:
            await session.execute(text("SELECT 1"))
            await driver.fetchval("SELECT 1")

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(clients))), CONNECT_TIMEOUT_S)


async def post(db: Database, batch: list[Transfer]) -> None:
    """One transaction of its own per batch: `ledger.post`, the ledger's entry point for a
    standalone batch (one statement, one round trip)."""
    await ledger.post(db, batch)


async def _ledger_client(db: Database, make: MakeBatch, tag: str, deadline: float, run: Run) -> None:
    calls = 0
    while time.perf_counter() < deadline:
        batch = make(f"{tag}:{calls}")
        calls += 1
        try:
            await post(db, batch)
        except Exception as exc:
            run.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            continue
        run.transfers += len(batch)


async def _vacuum_balances(db: Database) -> None:
    """What pgbench does before each of its runs to its own updated tables (branches and
    tellers; `-n` would skip it): the ledger's balance rows start each run vacuumed too.
    The server may have autovacuum off (the PostgreSQL of the machines this project runs
    on has), and then the dead row versions of every earlier run pile up in front of the
    later ones."""
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ledger_accounts")


async def ledger_measure(url: str, make: MakeBatch, tag: str, clients: int, duration_s: float) -> Run:
    db = Database.connect(url, Settings(db_pool_size=clients, db_max_overflow=0))
    try:
        await _vacuum_balances(db)
        await _warm(db, clients)
        run = Run(transfers=0, elapsed_s=0.0)
        started, cpu_started = time.perf_counter(), time.process_time()
        deadline = started + duration_s
        await asyncio.gather(*(_ledger_client(db, make, f"{tag}:{c}", deadline, run) for c in range(clients)))
        run.elapsed_s, run.client_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        return run
    finally:
        await db.dispose()


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- the peer: django-hordak --------------------------------------------------------------------


def django_database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a libpq URL (TCP, or a unix socket given as ?host=/dir)."""
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": None,
    }


def hordak_setup(url: str, accounts: int) -> list[Any]:
    """Configure Django in this process, migrate hordak, open the accounts; return them."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        DATABASES={"default": django_database(url)},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "mptt", "djmoney", "hordak"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DEFAULT_CURRENCY=ASSET,
        CURRENCIES=[ASSET],
        HORDAK_INTERNAL_CURRENCY=ASSET,
    )
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.db import connections
    from hordak.models import Account, AccountType

    made = [
        Account.objects.create(name=f"bench {i}", type=AccountType.asset, currencies=[ASSET]) for i in range(accounts)
    ]
    connections.close_all()
    return made


def _hordak_client(accounts: list[Any], duration_s: float, barrier: threading.Barrier, run: Run, lock: Any) -> None:
    from django.db import connection
    from djmoney.money import Money

    connection.ensure_connection()
    barrier.wait(timeout=CONNECT_TIMEOUT_S)
    deadline = time.perf_counter() + duration_s
    amount = Money(AMOUNT_MINOR, ASSET) / 100
    done, errors = 0, Counter[str]()
    while time.perf_counter() < deadline:
        debit, credit = random.sample(accounts, 2)
        try:
            credit.transfer_to(debit, amount)  # transfer_to credits self and debits the argument
        except Exception as exc:
            errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            continue
        done += 1
    connection.close()
    with lock:
        run.transfers += done
        run.errors.update(errors)


def hordak_measure(accounts: list[Any], clients: int, duration_s: float) -> Run:
    run = Run(transfers=0, elapsed_s=0.0)
    barrier, lock = threading.Barrier(clients + 1), threading.Lock()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(_hordak_client, accounts, duration_s, barrier, run, lock) for _ in range(clients)]
        barrier.wait(timeout=CONNECT_TIMEOUT_S)
        started, cpu_started = time.perf_counter(), time.process_time()
        for future in futures:
            future.result(timeout=duration_s + CONNECT_TIMEOUT_S)
        run.elapsed_s, run.client_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    return run


# --- orchestration ------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    admin: str
    pgbench: str
    pgbench_url: str
    ledger_url: str
    makers: dict[str, MakeBatch]
    hordak_accounts: list[Any] | None
    figures: dict[str, Figure]


def prepare(args: argparse.Namespace) -> Bench:
    admin = admin_url()
    binary = pgbench_binary(admin)
    pgbench_url = recreate_database(admin, PGBENCH_DB)
    pgbench_init(binary, pgbench_url, args.clients)
    ledger_url = recreate_database(admin, LEDGER_DB)
    migrations.upgrade(ledger_url)
    ids, hot = run_async(ledger_setup(ledger_url, args.accounts))
    makers = {"single": batch_maker(ids, 1), "batched": batch_maker(ids, args.batch), "hot": batch_maker(ids, 1, hot)}
    figures = {
        "pgbench": Figure(f"pgbench tpcb-like ({args.clients} clients)", "tps"),
        "single": Figure("single transfers", "transfers/s"),
        "batched": Figure(f"batched transfers ({args.batch}/call)", "transfers/s"),
        "hot": Figure("hot account", "transfers/s"),
        "hordak": Figure("django-hordak single transfers", "transfers/s"),
    }
    return Bench(args, admin, binary, pgbench_url, ledger_url, makers, hordak_peer(admin, args, figures), figures)


def hordak_peer(admin: str, args: argparse.Namespace, figures: dict[str, Figure]) -> list[Any] | None:
    try:
        return hordak_setup(recreate_database(admin, HORDAK_DB), args.accounts)
    except Exception as exc:
        figures["hordak"].unavailable = f"{type(exc).__name__}: {exc}"
        return None


def measure_round(bench: Bench, repeat: int) -> None:
    args, figures = bench.args, bench.figures
    figures["pgbench"].runs.append(pgbench_run(bench.pgbench, bench.pgbench_url, args.clients, args.duration))
    for name, make in bench.makers.items():
        retries_before = retries()
        run = run_async(ledger_measure(bench.ledger_url, make, f"r{repeat}:{name}", args.clients, args.duration))
        figures[name].runs.append(run)
        figures[name].retries += retries() - retries_before
    if bench.hordak_accounts is not None:
        figures["hordak"].runs.append(hordak_measure(bench.hordak_accounts, args.clients, args.duration))


def retries() -> int:
    return sum(LOG_EVENTS[event] for event in RETRY_EVENTS)


def server_version(admin: str) -> str:
    with psycopg.connect(admin) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]


def report(bench: Bench) -> None:
    args, f = bench.args, bench.figures
    where = urlsplit(bench.admin)
    host = parse_qs(where.query).get("host", [where.hostname])[0]
    print(
        f"ledger bench: {args.clients} clients, {args.duration:g}s × {args.repeats} (medians), {args.accounts} accounts"
    )
    print(f"server: PostgreSQL {server_version(bench.admin)} at {host}; pgbench: {bench.pgbench}")
    base, single = f["pgbench"].median_per_s, f["single"].median_per_s
    line(f["pgbench"], "")
    line(f["single"], f"= {single / base:.2f}x pgbench   (target ≥ 1.0x)")
    line(f["batched"], f"= {f['batched'].median_per_s / base:.1f}x pgbench   (target ≥ 10x)")
    line(f["hot"], f"= {f['hot'].median_per_s / single:.2f}x single    (target ≥ 0.5x)")
    if f["hordak"].unavailable is not None:
        print(f"peer unavailable: {f['hordak'].unavailable}")
    else:
        line(f["hordak"], f"-> ledger single = {single / f['hordak'].median_per_s:.1f}x hordak   (target ≥ 10x)")
    for figure in f.values():
        problems(figure)


def line(figure: Figure, ratio: str) -> None:
    runs = ", ".join(f"{r.per_s:.0f}" for r in figure.runs)
    cpu = f"client {figure.median_client_cores:.2f} cores"
    print(f"{figure.name:37}: {figure.median_per_s:8.0f} {figure.unit:12} {ratio:50} [{runs}] {cpu}")


def problems(figure: Figure) -> None:
    if figure.retries:
        print(f"{figure.name}: {figure.retries} retries after a deadlock / serialization failure")
    for message, count in figure.errors.most_common(MAX_ERRORS_SHOWN):
        print(f"{figure.name}: {count} × error reached the client: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (connections) everywhere")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement (median reported)")
    parser.add_argument("--accounts", type=int, default=1000, help="accounts the random transfers pick from")
    parser.add_argument("--batch", type=int, default=1000, help="transfers per call in the batched measurement")
    args = parser.parse_args()
    assert 1 <= args.clients <= 64 and 1 <= args.repeats <= 20 and 0 < args.duration <= 600
    assert 2 <= args.accounts <= 100_000 and 1 <= args.batch <= ledger.MAX_BATCH
    quiet_logs()
    bench = prepare(args)
    for repeat in range(args.repeats):
        measure_round(bench, repeat)
    report(bench)


if __name__ == "__main__":
    main()
