"""Alembic environment: synchronous psycopg connection, metadata from every domain."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from stablegate import models_registry

config = context.config
target_metadata = models_registry.metadata()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set (stablegate db upgrade sets it)"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            include_name=models_registry.include_name,
            include_object=models_registry.include_object,
        )
        with context.begin_transaction():
            # Two processes migrating at once (api + worker starting together) serialise here.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7265636)")
            context.run_migrations()
    engine.dispose()


run_migrations_online()
