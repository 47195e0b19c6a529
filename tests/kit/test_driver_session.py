"""The session's driver connection (db.driver_connection / driver_in_transaction) on the
real database: a transaction begun on the driver is the session's own (it commits and
rolls back with the session's ORM statements), and the memoised connection follows the
session across transactions."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from stablegate.db import Database, driver_connection, driver_in_transaction


@pytest.fixture
async def scratch(db: Database) -> str:
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    async with db.session() as session:
        await session.execute(text(f"CREATE TABLE {name} (n int PRIMARY KEY)"))
    return name


async def _count(db: Database, table: str) -> int:
    async with db.session() as session:
        return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_a_statement_before_the_transaction_runs_on_its_own(db: Database, scratch: str) -> None:
    async with db.sessionmaker() as session:
        driver = await driver_connection(session)
        assert not driver.is_in_transaction()
        await driver.execute(f"INSERT INTO {scratch} VALUES (1)")
        await session.rollback()
    assert await _count(db, scratch) == 1  # autocommit: the rollback had nothing to undo


async def test_driver_and_orm_statements_commit_together(db: Database, scratch: str) -> None:
    async with db.sessionmaker() as session:
        driver = await driver_in_transaction(session)
        await driver.execute(f"INSERT INTO {scratch} VALUES (1)")
        await session.execute(text(f"INSERT INTO {scratch} VALUES (2)"))  # no second BEGIN
        assert await driver_in_transaction(session) is driver
        assert await _count(db, scratch) == 0  # nothing visible before the commit
        await session.commit()
    assert await _count(db, scratch) == 2


async def test_driver_and_orm_statements_roll_back_together(db: Database, scratch: str) -> None:
    async with db.sessionmaker() as session:
        await session.execute(text(f"INSERT INTO {scratch} VALUES (1)"))  # the ORM begins
        driver = await driver_in_transaction(session)
        await driver.execute(f"INSERT INTO {scratch} VALUES (2)")
        await session.rollback()
        assert not driver.is_in_transaction()
    assert await _count(db, scratch) == 0


async def test_each_session_transaction_begins_anew(db: Database, scratch: str) -> None:
    async with db.sessionmaker() as session:
        first = await driver_in_transaction(session)
        await first.execute(f"INSERT INTO {scratch} VALUES (1)")
        await session.commit()
        assert not first.is_in_transaction()
        # After the commit the session may hold another pooled connection: asked again,
        # the helper must hand out the current one, in a fresh transaction.
        second = await driver_in_transaction(session)
        assert second.is_in_transaction()
        raw = await (await session.connection()).get_raw_connection()
        assert second is raw.driver_connection
        await second.execute(f"INSERT INTO {scratch} VALUES (2)")
        await session.rollback()
    assert await _count(db, scratch) == 1
