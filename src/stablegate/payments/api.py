from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from stablegate.kit.pagination import PageRequest
from stablegate.kit.validation import NO_NUL_PATTERN
from stablegate.merchants.service import Principal
from stablegate.payments import service
from stablegate.payments.schemas import Payment, PaymentCreate
from stablegate.payments.service import Context
from stablegate.web import ListResponse, SessionDep, error_responses, model_response, page_params, require

router = APIRouter(prefix="/v1/payments", tags=["payments"])

Reader = Annotated[Principal, Depends(require("payments:read"))]
Writer = Annotated[Principal, Depends(require("payments:write"))]
PaymentId = Annotated[str, Path(max_length=64, description="A `pay_` id.")]
MAX_UNIX_S = 253402300799  # 9999-12-31T23:59:59Z


async def get_context(request: Request) -> Context:
    ctx = request.app.state.payments
    assert isinstance(ctx, Context)
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


@router.post("", response_model=Payment, responses=error_responses(409))
async def create_payment(session: SessionDep, principal: Writer, ctx: ContextDep, params: PaymentCreate) -> Response:
    """Create a payment: a price in fiat or a token, and per accepted chain and token a quote
    and two ways to pay it — a signed intent for the payment contract (wallets) and a
    deposit address (exchange withdrawals, plain transfers). Send an `Idempotency-Key`."""
    return model_response(await service.create(session, principal, params, ctx))


@router.get("/{id}", response_model=Payment, responses=error_responses(404))
async def retrieve_payment(id: PaymentId, session: SessionDep, principal: Reader) -> Payment:
    return await service.retrieve(session, principal, id)


@router.post("/{id}/cancel", response_model=Payment, responses=error_responses(404, 409))
async def cancel_payment(id: PaymentId, session: SessionDep, principal: Writer) -> Payment:
    """Cancel a payment that still requires payment. Money that arrives later is still
    credited, and the payment is flagged `late` for you to accept or refund."""
    return await service.cancel(session, principal, id)


@router.post("/{id}/accept", response_model=Payment, responses=error_responses(404))
async def accept_late_payment(id: PaymentId, session: SessionDep, principal: Writer) -> Payment:
    """Keep late money (`late`: mined after the payment's expiry, or arrived once it had
    expired or been canceled, possibly while on-time money still confirms): the
    alternative to refunding it. Sets `late_accepted_at` and sends `payment.late_accepted`;
    accepting again changes nothing. Only a late payment can be accepted."""
    return await service.accept_late(session, principal, id)


@router.get("", response_model=ListResponse[Payment], responses=error_responses())
async def list_payments(
    session: SessionDep,
    principal: Reader,
    page: Annotated[PageRequest, Depends(page_params(service.PREFIX))],
    status: Annotated[
        Literal["requires_payment", "processing", "succeeded", "expired", "canceled"] | None,
        Query(description="Only payments in this status."),
    ] = None,
    reference: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=NO_NUL_PATTERN, description="Your order id.")
    ] = None,
    created_gte: Annotated[
        int | None, Query(alias="created[gte]", ge=0, le=MAX_UNIX_S, description="Created at or after (unix s).")
    ] = None,
    created_lt: Annotated[
        int | None, Query(alias="created[lt]", ge=0, le=MAX_UNIX_S, description="Created before (unix s).")
    ] = None,
) -> ListResponse[Payment]:
    """Payments, newest first, with cursor pagination and filters."""
    filters = {
        "status": status,
        "reference": reference,
        "created_gte": _time(created_gte),
        "created_lt": _time(created_lt),
    }
    result = await service.list_page(session, principal, page, filters)
    return ListResponse(url="/v1/payments", has_more=result.has_more, data=result.data)


def _time(unix_s: int | None) -> dt.datetime | None:
    return None if unix_s is None else dt.datetime.fromtimestamp(unix_s, dt.UTC)
