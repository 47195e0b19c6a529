from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from stablegate.customers import service
from stablegate.customers.schemas import Customer, CustomerCreate, CustomerUpdate, to_schema
from stablegate.kit.pagination import PageRequest
from stablegate.merchants.service import Principal
from stablegate.web import ListResponse, SessionDep, error_responses, page_params, require

router = APIRouter(prefix="/v1/customers", tags=["customers"])

Reader = Annotated[Principal, Depends(require("customers:read"))]
Writer = Annotated[Principal, Depends(require("customers:write"))]
CustomerId = Annotated[str, Path(max_length=64, description="A `cus_` id.")]


@router.post("", response_model=Customer, responses=error_responses(409))
async def create_customer(session: SessionDep, principal: Writer, params: CustomerCreate | None = None) -> Customer:
    """Create a customer (every field optional). Send an `Idempotency-Key` header to make retries safe."""
    return to_schema(await service.create(session, principal, params or CustomerCreate()))


@router.get("/{id}", response_model=Customer, responses=error_responses(404))
async def retrieve_customer(id: CustomerId, session: SessionDep, principal: Reader) -> Customer:
    return to_schema(await service.get(session, principal, id))


@router.post("/{id}", response_model=Customer, responses=error_responses(404, 409))
async def update_customer(
    id: CustomerId, session: SessionDep, principal: Writer, params: CustomerUpdate | None = None
) -> Customer:
    """Update the fields you pass; metadata keys merge, and an empty string removes a key."""
    return to_schema(await service.update(session, principal, id, params or CustomerUpdate()))


@router.get("", response_model=ListResponse[Customer], responses=error_responses())
async def list_customers(
    session: SessionDep, principal: Reader, page: Annotated[PageRequest, Depends(page_params(service.PREFIX))]
) -> ListResponse[Customer]:
    """Customers, newest first, with cursor pagination."""
    result = await service.list_page(session, principal, page)
    return ListResponse(url="/v1/customers", has_more=result.has_more, data=[to_schema(c) for c in result.data])
