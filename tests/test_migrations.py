"""Migrations match the models, and go down and up again cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from stablegate import migrations, models_registry
from stablegate.db import with_driver
from tests.conftest import admin_url, recreate_database


def test_models_and_migrations_agree_and_round_trip() -> None:
    url = recreate_database(admin_url(), "stablegate_test_migrations")
    migrations.upgrade(url)
    engine = create_engine(with_driver(url, "psycopg"))
    try:
        with engine.connect() as conn:
            opts = {"include_name": models_registry.include_name, "include_object": models_registry.include_object}
            context = MigrationContext.configure(conn, opts=opts)
            diff = compare_metadata(context, models_registry.metadata())
        assert diff == [], f"models differ from migrations; write a revision: {diff}"
    finally:
        engine.dispose()
    migrations.downgrade(url, "base")
    assert migrations.current(url) is None
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head_revision()
