from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from stablegate.merchants import service
from stablegate.merchants.schemas import Account, to_account
from stablegate.merchants.service import Principal
from stablegate.web import SessionDep, error_responses, require

router = APIRouter(prefix="/v1", tags=["account"])


@router.get("/account", response_model=Account, responses=error_responses())
async def get_account(
    session: SessionDep, principal: Annotated[Principal, Depends(require("account:read"))]
) -> Account:
    """The merchant account behind the API key used for this request."""
    merchant = await service.get_merchant(session, principal.merchant_id)
    return to_account(merchant.id, merchant.name, principal.mode, merchant.created_at)
