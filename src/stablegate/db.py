"""Database wiring: URL resolution (DATABASE_URL or embedded), engine, sessions, Base."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from sqlalchemy import DateTime, MetaData
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from stablegate import embedded_pg
from stablegate.config import Settings
from stablegate.observability import metrics, tracing

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
MAX_ATTEMPTS = 16  # jittered exponential backoff: a livelock of victims cannot last
RETRY_BASE_DELAY_S = 0.005
RETRY_MAX_DELAY_S = 0.5
T = TypeVar("T")
log = structlog.get_logger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: DateTime(timezone=True)}


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The session's asyncpg connection, for the few hot-path statements where the ORM's
    per-statement cost (~130 µs CPU, bench/api_overhead.py) matters.

    SQLAlchemy begins its transaction lazily, at the session's first statement; a statement
    sent here before that runs on its own (autocommit). Callers rely on that on purpose
    and check `is_in_transaction()` when it matters.
    """
    return (await _driver(session))[0]


async def driver_in_transaction(session: AsyncSession) -> asyncpg.Connection:
    """The session's driver connection with the session's transaction begun on it, for
    statements that must commit or roll back with the session's other work."""
    driver, adapter = await _driver(session)
    if not driver.is_in_transaction():
        # What SQLAlchemy's asyncpg adapter does before its first statement (BEGIN, and
        # the transaction it later commits or rolls back): started here, it costs one
        # round trip instead of two plus an ORM statement (the `SELECT 1` this replaced).
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()
    assert driver.is_in_transaction(), "the session's transaction did not begin"
    return driver


_DRIVER_KEY = "stablegate.driver"


async def _driver(session: AsyncSession) -> tuple[asyncpg.Connection, Any]:
    """(asyncpg connection, SQLAlchemy's adapter around it) of the session's current
    transaction. Memoised per session transaction: a payment asks ~8 times, and each
    `session.connection()` round through SQLAlchemy costs ~16 µs. A new transaction
    (after commit or rollback) may hold another pooled connection, so it asks again."""
    current = session.sync_session.get_transaction()
    memo = session.info.get(_DRIVER_KEY)
    if memo is not None and current is not None and memo[0] is current:
        return memo[1], memo[2]
    raw = await (await session.connection()).get_raw_connection()
    driver, adapter = raw.driver_connection, raw.dbapi_connection
    assert isinstance(driver, asyncpg.Connection)
    session.info[_DRIVER_KEY] = (session.sync_session.get_transaction(), driver, adapter)
    return driver, adapter


async def driver_fetchrow(session: AsyncSession, sql: str, *args: Any, outside_transaction: bool = False) -> Any:
    """Run `sql` on the driver connection (see driver_connection), traced like ORM statements."""
    driver = await driver_connection(session)
    if outside_transaction:
        assert not driver.is_in_transaction(), "must run before the session's transaction begins"
    with tracing.sql_span(sql):
        return await driver.fetchrow(sql, *args)


async def before_retry(state: str | None, attempt: int) -> None:
    """Count and log a transaction aborted by a deadlock or serialization failure, then
    wait a jittered, exponentially growing delay (attempt 0 is the first failure), so
    that the aborted transactions do not collide again at once."""
    log.info("db.retry", sqlstate=state, attempt=attempt + 1)
    metrics.DB_RETRIES.labels(state or "unknown").inc()
    delay_s = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2**attempt)
    await asyncio.sleep(delay_s * random.random())  # noqa: S311


def sqlstate(exc: DBAPIError) -> str | None:
    """The SQLSTATE of the driver error behind a SQLAlchemy DBAPIError."""
    cause = exc.orig.__cause__ if exc.orig is not None else None
    state = getattr(cause, "sqlstate", None) or getattr(exc.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def libpq_url(settings: Settings) -> str:
    """A plain postgresql:// URL: DATABASE_URL if set, else the embedded server's."""
    if settings.database_url:
        return settings.database_url
    return embedded_pg.database_url(settings.data_dir / "pg")


def with_driver(url: str, driver: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return urlunsplit(parts._replace(scheme=f"{scheme}+{driver}" if driver else scheme))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


class StatementPool:
    """Driver connections for single statements in autocommit, outside any ORM session
    (the ledger's standalone batches). A checkout and check-in through SQLAlchemy's pool
    cost ~100 µs of this process's CPU, asyncpg's own pool ~30 µs (with its reset query,
    a round trip, replaced); this one is a list and a semaphore (~5 µs), which is what a
    caller that sends one statement and keeps no session state needs. Measured with
    bench/ledger.py's single transfers, 8 clients: ~190 µs of client CPU per transfer
    through SQLAlchemy, ~90 µs through this pool, and ~30 % more transfers/s.

    At most `size` connections, opened on first use. A connection whose statement failed
    with a database error is fine and goes back; one that failed otherwise (cancelled,
    lost) or was left inside a transaction is closed, never handed on."""

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._idle: list[asyncpg.Connection] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._slots:
            conn = self._idle_connection() or await asyncpg.connect(self._dsn)
            try:
                yield conn
            except asyncpg.PostgresError:
                self._give_back(conn)
                raise
            except BaseException:
                conn.terminate()
                raise
            self._give_back(conn)

    def _idle_connection(self) -> asyncpg.Connection | None:
        """The most recently used idle connection that is still open (the server may have
        closed one meanwhile: it is dropped here rather than fail a caller's statement)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
        return None

    def _give_back(self, conn: asyncpg.Connection) -> None:
        if conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    url: str
    statements: StatementPool

    @classmethod
    def connect(cls, url: str, settings: Settings) -> Database:
        engine = create_async_engine(
            with_driver(url, "asyncpg"),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=False,
        )
        maker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        statements = StatementPool(with_driver(url, ""), settings.db_pool_size)
        return cls(engine=engine, sessionmaker=maker, url=url, statements=statements)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work for jobs and scripts: commit on success, rollback on error."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def retrying(self, work: Callable[[AsyncSession], Awaitable[T]], max_attempts: int = MAX_ATTEMPTS) -> T:
        """Run `work` as one transaction, retrying the whole of it after a deadlock or a
        serialization failure (the only safe place to retry: the aborted transaction's
        other statements must run again too). Other errors propagate at once."""
        for attempt in range(max_attempts):
            try:
                async with self.session() as session:
                    return await work(session)
            except DBAPIError as exc:
                if sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt + 1 == max_attempts:
                    raise
                await before_retry(sqlstate(exc), attempt)
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        await self.statements.close()
        await self.engine.dispose()
