"""Imports every domain's models so Alembic autogenerate sees one complete MetaData."""

from __future__ import annotations

from sqlalchemy import MetaData


def metadata() -> MetaData:
    from stablegate.customers import models as _customers  # noqa: F401
    from stablegate.db import Base
    from stablegate.kit import idempotency_models as _idempotency  # noqa: F401
    from stablegate.merchants import models as _merchants  # noqa: F401

    return Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate filter: procrastinate's tables belong to procrastinate (its own SQL)."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))
