"""SQL for customers. Every query is scoped by (merchant_id, mode)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.customers.models import Customer
from stablegate.kit import pagination
from stablegate.kit.pagination import Page, PageRequest

# Built once with bind parameters: building a statement costs more CPU than running it.
_GET = select(Customer).where(
    Customer.merchant_id == bindparam("merchant_id"), Customer.mode == bindparam("mode"), Customer.id == bindparam("id")
)
_GET_FOR_UPDATE = _GET.with_for_update()
_INSERT = insert(Customer).returning(Customer)


async def insert_customer(session: AsyncSession, values: dict[str, Any]) -> Customer:
    """One round trip: INSERT … RETURNING brings back the server-side timestamps."""
    created = await session.scalar(_INSERT, [values])
    assert created is not None
    return created


async def get(
    session: AsyncSession, merchant_id: str, mode: str, customer_id: str, *, for_update: bool = False
) -> Customer | None:
    query = _GET_FOR_UPDATE if for_update else _GET
    return await session.scalar(query, {"merchant_id": merchant_id, "mode": mode, "id": customer_id})


async def list_page(session: AsyncSession, merchant_id: str, mode: str, page: PageRequest) -> Page[Customer]:
    query = select(Customer).where(Customer.merchant_id == merchant_id, Customer.mode == mode)
    rows = (await session.scalars(pagination.apply(query, Customer.id, page))).all()
    return pagination.finish(rows, page)
