"""Cursor pagination shared by every list endpoint.

Ids are time-sortable, so the cursor *is* an object id: lists go newest first and
`starting_after=X` returns objects older than X, `ending_before=X` objects newer than X,
and both together the objects strictly between the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, TypeVarTuple

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

from stablegate.errors import InvalidRequest
from stablegate.kit.ids import is_valid_id

MAX_LIMIT = 100
DEFAULT_LIMIT = 10

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None
    ending_before: str | None = None

    @classmethod
    def parse(cls, prefix: str, limit: int, starting_after: str | None, ending_before: str | None) -> PageRequest:
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}.", param="limit", code="parameter_invalid")
        for name, cursor in (("starting_after", starting_after), ("ending_before", ending_before)):
            if cursor is not None and not is_valid_id(cursor, prefix):
                raise InvalidRequest(f"{name} must be an id of the form {prefix}_….", param=name, code="invalid_cursor")
        return cls(limit, starting_after, ending_before)


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    has_more: bool


def apply(query: Select[*Ts], id_column: InstrumentedAttribute[str], page: PageRequest) -> Select[*Ts]:
    """Add the cursor condition, order and limit+1 (to learn has_more) to `query`."""
    if page.starting_after is not None:
        query = query.where(id_column < page.starting_after)
    if page.ending_before is not None:
        query = query.where(id_column > page.ending_before)
        if page.starting_after is None:
            # Walk forwards from the cursor, then flip, so the page stays newest-first.
            return query.order_by(id_column.asc()).limit(page.limit + 1)
    return query.order_by(id_column.desc()).limit(page.limit + 1)


def sql_window(page: PageRequest, args: list[Any], column: str = "id") -> tuple[list[str], str]:
    """`apply` for raw SQL: the cursor conditions, their values appended to `args` as
    `$n` parameters, and the ORDER BY direction. The caller selects `page.limit + 1`
    rows and passes them to `finish`."""
    clauses: list[str] = []
    for cursor, operator in ((page.starting_after, "<"), (page.ending_before, ">")):
        if cursor is not None:
            args.append(cursor)
            clauses.append(f"{column} {operator} ${len(args)}")
    forwards = page.ending_before is not None and page.starting_after is None
    return clauses, "ASC" if forwards else "DESC"


def finish(rows: Sequence[T], page: PageRequest) -> Page[T]:
    items = list(rows[: page.limit])
    if page.ending_before is not None and page.starting_after is None:
        items.reverse()
    return Page(data=items, has_more=len(rows) > page.limit)
