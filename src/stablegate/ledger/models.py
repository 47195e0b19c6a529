"""Ledger tables (created by migration 0003, whose SQL also holds the posting function,
the CHECK-enforced flags and the append-only triggers). Mapped here for reads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Integer, Numeric, SmallInteger, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from stablegate.db import Base

AMOUNT = Numeric(78, 0)


class LedgerAsset(Base):
    __tablename__ = "ledger_assets"

    code: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    scale: Mapped[int] = mapped_column(SmallInteger)
    chain_id: Mapped[int | None] = mapped_column(BigInteger)
    contract: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    asset: Mapped[str] = mapped_column(Text, ForeignKey("ledger_assets.code"))
    type: Mapped[str] = mapped_column(Text)
    merchant_id: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[str | None] = mapped_column(Text)
    flags: Mapped[int] = mapped_column(Integer, server_default="0")
    debits_pending: Mapped[Decimal] = mapped_column(AMOUNT, server_default="0")
    debits_posted: Mapped[Decimal] = mapped_column(AMOUNT, server_default="0")
    credits_pending: Mapped[Decimal] = mapped_column(AMOUNT, server_default="0")
    credits_posted: Mapped[Decimal] = mapped_column(AMOUNT, server_default="0")
    closed_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class LedgerTransfer(Base):
    __tablename__ = "ledger_transfers"

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    id: Mapped[str] = mapped_column(Text, unique=True)
    public_id: Mapped[str] = mapped_column(Text, unique=True)
    debit_account: Mapped[int] = mapped_column(BigInteger)
    credit_account: Mapped[int] = mapped_column(BigInteger)
    asset: Mapped[str] = mapped_column(Text)
    amount: Mapped[Decimal] = mapped_column(AMOUNT)
    kind: Mapped[str] = mapped_column(Text)
    pending_id: Mapped[str | None] = mapped_column(Text, ForeignKey("ledger_transfers.id"))
    timeout_at: Mapped[dt.datetime | None] = mapped_column()
    timeout_s: Mapped[int | None] = mapped_column(BigInteger)  # as asked, compared on replay (0018)
    code: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default="{}")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
