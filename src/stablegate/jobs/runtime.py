"""What running tasks need, set once by the worker process (tasks import this, not app)."""

from __future__ import annotations

from stablegate.db import Database


class Runtime:
    db: Database | None = None

    @classmethod
    def database(cls) -> Database:
        assert cls.db is not None, "worker runtime not started"
        return cls.db
