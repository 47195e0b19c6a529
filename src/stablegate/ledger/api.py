from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from stablegate.kit.pagination import PageRequest
from stablegate.ledger import service
from stablegate.ledger.schemas import Balance, BalanceAmount, BalanceTransaction
from stablegate.merchants.service import Principal
from stablegate.web import ListResponse, SessionDep, error_responses, page_params, require

router = APIRouter(prefix="/v1", tags=["balance"])
Reader = Annotated[Principal, Depends(require("balance:read"))]


@router.get("/balance", response_model=Balance, responses=error_responses())
async def get_balance(session: SessionDep, principal: Reader) -> Balance:
    """What the platform holds for you, per asset: `available` can be paid out, `pending`
    is not settled yet. Amounts are integer strings in the asset's smallest unit."""
    balances = await service.merchant_balances(session, principal.merchant_id, principal.mode)
    return Balance(
        livemode=principal.mode == "live",
        available=[BalanceAmount(asset=b.asset, amount=str(b.available), scale=b.scale) for b in balances],
        pending=[BalanceAmount(asset=b.asset, amount=str(b.pending), scale=b.scale) for b in balances],
    )


@router.get("/balance_transactions", response_model=ListResponse[BalanceTransaction], responses=error_responses())
async def list_balance_transactions(
    session: SessionDep, principal: Reader, page: Annotated[PageRequest, Depends(page_params("txn"))]
) -> ListResponse[BalanceTransaction]:
    """Every movement of your balance, newest first, with the object that caused it."""
    entries = await service.merchant_entries(session, principal.merchant_id, principal.mode, page)
    data = [
        BalanceTransaction(
            id=e.public_id,
            amount=str(e.amount),
            asset=e.asset,
            scale=e.scale,
            status=e.status,
            bucket=e.bucket,
            from_bucket=e.from_bucket,
            type=e.type,
            source=e.source,
            created=int(e.created_at.timestamp()),
        )
        for e in entries.data
    ]
    return ListResponse(url="/v1/balance_transactions", has_more=entries.has_more, data=data)
