from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from stablegate.kit.pagination import PageRequest
from stablegate.merchants.service import Principal
from stablegate.settlement import runs, service
from stablegate.settlement.schemas import (
    Destination,
    DestinationCreate,
    Payout,
    PayoutCreate,
    Refund,
    RefundCreate,
    Settlement,
)
from stablegate.settlement.service import Context
from stablegate.web import ListResponse, SessionDep, error_responses, page_params, require

router = APIRouter(prefix="/v1", tags=["payouts"])

PayoutReader = Annotated[Principal, Depends(require("payouts:read"))]
PayoutWriter = Annotated[Principal, Depends(require("payouts:write"))]
RefundReader = Annotated[Principal, Depends(require("refunds:read"))]
RefundWriter = Annotated[Principal, Depends(require("refunds:write"))]
ObjectId = Annotated[str, Path(max_length=64)]
PAYMENT_ID_PATTERN = r"^pay_[0-9A-Z]{26}$"


async def get_context(request: Request) -> Context:
    ctx = request.app.state.settlement
    assert isinstance(ctx, Context)
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


# --- destinations ----------------------------------------------------------------------


@router.post("/payout_destinations", response_model=Destination, responses=error_responses(409))
async def create_destination(
    session: SessionDep, principal: PayoutWriter, ctx: ContextDep, params: DestinationCreate
) -> Destination:
    """Add a wallet address for payouts of one token on one chain. It is usable after the
    cooling-off period (`usable_after`): a stolen API key cannot add an address and drain
    the balance to it at once. Every addition and removal is audited."""
    return await service.create_destination(session, principal, params, ctx)


@router.get("/payout_destinations/{id}", response_model=Destination, responses=error_responses(404))
async def retrieve_destination(
    id: ObjectId, session: SessionDep, principal: PayoutReader, ctx: ContextDep
) -> Destination:
    return await service.retrieve_destination(session, principal, id, ctx)


@router.delete("/payout_destinations/{id}", response_model=Destination, responses=error_responses(404))
async def remove_destination(
    id: ObjectId, session: SessionDep, principal: PayoutWriter, ctx: ContextDep
) -> Destination:
    """Remove a destination; payouts already created to it proceed. To change an address,
    add the new one (its own cooling-off applies) and remove the old."""
    return await service.remove_destination(session, principal, id, ctx)


@router.get("/payout_destinations", response_model=ListResponse[Destination], responses=error_responses())
async def list_destinations(
    session: SessionDep,
    principal: PayoutReader,
    ctx: ContextDep,
    page: Annotated[PageRequest, Depends(page_params("dst"))],
) -> ListResponse[Destination]:
    result = await service.list_destinations(session, principal, page, ctx)
    return ListResponse(url="/v1/payout_destinations", has_more=result.has_more, data=result.data)


# --- payouts ---------------------------------------------------------------------------


@router.post("/payouts", response_model=Payout, responses=error_responses(404, 409))
async def create_payout(session: SessionDep, principal: PayoutWriter, ctx: ContextDep, params: PayoutCreate) -> Payout:
    """Pay part of your available balance to a destination. The amount and the payout fee
    are reserved at once; the destination receives `amount − fee`. Status goes `pending` →
    `broadcast` → `paid`, or `failed` (the funds return to your balance). Send an
    `Idempotency-Key`."""
    return await service.create_payout(session, principal, params, ctx)


@router.get("/payouts/{id}", response_model=Payout, responses=error_responses(404))
async def retrieve_payout(id: ObjectId, session: SessionDep, principal: PayoutReader, ctx: ContextDep) -> Payout:
    return await service.retrieve_payout(session, principal, id, ctx)


@router.post("/payouts/{id}/cancel", response_model=Payout, responses=error_responses(404, 409))
async def cancel_payout(id: ObjectId, session: SessionDep, principal: PayoutWriter, ctx: ContextDep) -> Payout:
    """Cancel a pending payout whose transaction is not signed yet; the funds return."""
    return await service.cancel_payout(session, principal, id, ctx)


@router.get("/payouts", response_model=ListResponse[Payout], responses=error_responses())
async def list_payouts(
    session: SessionDep,
    principal: PayoutReader,
    ctx: ContextDep,
    page: Annotated[PageRequest, Depends(page_params("po"))],
    status: Annotated[
        Literal["pending", "broadcast", "paid", "failed", "canceled"] | None,
        Query(description="Only payouts in this status."),
    ] = None,
) -> ListResponse[Payout]:
    result = await service.list_payouts(session, principal, page, status, ctx)
    return ListResponse(url="/v1/payouts", has_more=result.has_more, data=result.data)


# --- refunds ---------------------------------------------------------------------------


@router.post("/refunds", response_model=Refund, responses=error_responses(404, 409), tags=["refunds"])
async def create_refund(session: SessionDep, principal: RefundWriter, ctx: ContextDep, params: RefundCreate) -> Refund:
    """Refund a payment, fully or in parts, up to what it received in a token (late and
    overpaid money included), to an address you or the payer supply. The amount is
    reserved from your available balance at once. Send an `Idempotency-Key`."""
    return await service.create_refund(session, principal, params, ctx)


@router.get("/refunds/{id}", response_model=Refund, responses=error_responses(404), tags=["refunds"])
async def retrieve_refund(id: ObjectId, session: SessionDep, principal: RefundReader, ctx: ContextDep) -> Refund:
    return await service.retrieve_refund(session, principal, id, ctx)


@router.get("/refunds", response_model=ListResponse[Refund], responses=error_responses(), tags=["refunds"])
async def list_refunds(
    session: SessionDep,
    principal: RefundReader,
    ctx: ContextDep,
    page: Annotated[PageRequest, Depends(page_params("re"))],
    payment: Annotated[
        str | None, Query(max_length=64, pattern=r"^pay_[0-9A-Z]{26}$", description="Only refunds of this payment.")
    ] = None,
) -> ListResponse[Refund]:
    result = await service.list_refunds(session, principal, page, payment, ctx)
    return ListResponse(url="/v1/refunds", has_more=result.has_more, data=result.data)


# --- settlements -----------------------------------------------------------------------


@router.get("/settlements", response_model=ListResponse[Settlement], responses=error_responses())
async def list_settlements(
    session: SessionDep,
    principal: PayoutReader,
    page: Annotated[PageRequest, Depends(page_params("stl"))],
) -> ListResponse[Settlement]:
    """Settlements made by your schedule, newest first: what each covers (payments, their
    fees, refunds) and the payout that paid it."""
    result = await runs.list_settlements(session, principal, page)
    return ListResponse(url="/v1/settlements", has_more=result.has_more, data=result.data)


@router.get("/settlements/{id}", response_model=Settlement, responses=error_responses(404))
async def retrieve_settlement(id: ObjectId, session: SessionDep, principal: PayoutReader) -> Settlement:
    return await runs.retrieve_settlement(session, principal, id)
