"""Customer rules. Flushes only; the request boundary commits."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.customers import repository
from stablegate.customers.models import Customer
from stablegate.customers.schemas import CustomerCreate, CustomerUpdate
from stablegate.errors import InvalidRequest, NotFound
from stablegate.kit.ids import new_id
from stablegate.kit.pagination import Page, PageRequest
from stablegate.kit.validation import MAX_METADATA_KEYS
from stablegate.merchants.service import Principal

PREFIX = "cus"


async def create(session: AsyncSession, principal: Principal, params: CustomerCreate) -> Customer:
    values = {
        "id": new_id(PREFIX),
        "merchant_id": principal.merchant_id,
        "mode": principal.mode,
        "email": params.email,
        "name": params.name,
        "description": params.description,
        "metadata_": {k: v for k, v in (params.metadata or {}).items() if v != ""},
    }
    return await repository.insert_customer(session, values)


async def get(session: AsyncSession, principal: Principal, customer_id: str, *, for_update: bool = False) -> Customer:
    customer = await repository.get(session, principal.merchant_id, principal.mode, customer_id, for_update=for_update)
    if customer is None:
        # Same answer whether the id exists for another merchant/mode or not at all.
        raise NotFound(f"No such customer: '{customer_id[:64]}'.", param="id")
    return customer


async def update(session: AsyncSession, principal: Principal, customer_id: str, params: CustomerUpdate) -> Customer:
    customer = await get(session, principal, customer_id, for_update=True)
    fields = params.model_dump(exclude_unset=True)
    for name in ("email", "name", "description"):
        if name in fields:
            setattr(customer, name, fields[name])
    if params.metadata is not None:
        customer.metadata_ = _merge_metadata(customer.metadata_, params.metadata)
    customer.updated_at = func.now()
    await session.flush()
    await session.refresh(customer, ["updated_at"])
    return customer


def _merge_metadata(current: dict[str, str], changes: dict[str, str]) -> dict[str, str]:
    merged = dict(current)
    for key, value in changes.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_METADATA_KEYS:
        raise InvalidRequest(f"metadata may hold at most {MAX_METADATA_KEYS} keys.", param="metadata")
    return merged


async def list_page(session: AsyncSession, principal: Principal, page: PageRequest) -> Page[Customer]:
    return await repository.list_page(session, principal.merchant_id, principal.mode, page)
