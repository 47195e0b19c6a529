"""Alembic, driven from code: `stablegate db upgrade`, and `dev`/`demo`/tests at start-up."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from stablegate.db import with_driver


def script_location() -> Path:
    """The repository's migrations/ in a checkout; the copy inside the wheel otherwise."""
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    packaged = Path(__file__).resolve().parent / "_migrations"
    assert (packaged / "env.py").exists(), "migrations not found in checkout or package"
    return packaged


def revision_module(filename: str) -> ModuleType:
    """An earlier migration's module by file name, for a later one that reuses its frozen
    SQL text or constants (migration files are not an importable package)."""
    path = script_location() / "versions" / filename
    spec = importlib.util.spec_from_file_location(f"stablegate_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        # Migrations run synchronously through psycopg; '%' must be escaped for configparser.
        config.set_main_option("sqlalchemy.url", with_driver(url, "psycopg").replace("%", "%%"))
    return config


@functools.lru_cache(maxsize=1)
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(with_driver(url, "psycopg"))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
