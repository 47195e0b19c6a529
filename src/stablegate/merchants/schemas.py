from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Account(BaseModel):
    """The merchant that owns the calling API key, seen in that key's mode."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    object: Literal["account"] = "account"
    id: str
    name: str
    mode: Literal["test", "live"]
    livemode: bool
    created: int


def to_account(merchant_id: str, name: str, mode: str, created_at: dt.datetime) -> Account:
    return Account(
        id=merchant_id,
        name=name,
        mode=mode,
        livemode=mode == "live",
        created=int(created_at.timestamp()),
    )
