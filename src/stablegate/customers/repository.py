"""SQL for customers. Every query is scoped by (merchant_id, mode)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.customers.models import Customer
from stablegate.kit import pagination
from stablegate.kit.pagination import Page, PageRequest


async def insert(session: AsyncSession, customer: Customer) -> Customer:
    session.add(customer)
    await session.flush()
    await session.refresh(customer, ["created_at", "updated_at"])
    return customer


async def get(
    session: AsyncSession, merchant_id: str, mode: str, customer_id: str, *, for_update: bool = False
) -> Customer | None:
    query = select(Customer).where(
        Customer.merchant_id == merchant_id, Customer.mode == mode, Customer.id == customer_id
    )
    if for_update:
        query = query.with_for_update()
    return await session.scalar(query)


async def list_page(session: AsyncSession, merchant_id: str, mode: str, page: PageRequest) -> Page[Customer]:
    query = select(Customer).where(Customer.merchant_id == merchant_id, Customer.mode == mode)
    rows = (await session.scalars(pagination.apply(query, Customer.id, page))).all()
    return pagination.finish(rows, page)
