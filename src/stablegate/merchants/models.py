from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, ForeignKey, Index, LargeBinary, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from stablegate.db import Base


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("mode IN ('test', 'live')", name="mode"),
        CheckConstraint("kind IN ('secret', 'publishable', 'restricted')", name="kind"),
        Index("ix_api_keys_merchant_mode", "merchant_id", "mode", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    mode: Mapped[str] = mapped_column(String(4))
    kind: Mapped[str] = mapped_column(String(12))
    name: Mapped[str | None] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    # What the merchant sees in listings, e.g. "sk_test_4fQz"; never enough to authenticate.
    prefix: Mapped[str] = mapped_column(String(24))
    # HMAC-SHA256(server secret, full key): the only form of the key we keep.
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column()
    # Optional: a key used by a script or a contractor can be made to lapse by itself.
    expires_at: Mapped[dt.datetime | None] = mapped_column()
