"""Wallets: user wallets (balance never below zero), one system account per currency for the outside world, and one
FX account per currency for the house's currency position (wallet/operations/fx.py)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class Wallet(Base):
    __tablename__ = "wallets"

    id: Mapped[uuid.UUID] = uuid_pk()
    number: Mapped[str] = mapped_column(String(10), nullable=False, unique=True)
    # NULL for system accounts; their balance is derived from entries, never stored (no hot row).
    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # The part of the balance reserved by ACTIVE holds (models/holds.py): their amounts not yet captured. Kept in
    # step with the holds under this row's lock; available balance = balance - held.
    held: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    is_system: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    # A system account that is the house's position in its currency for cross-currency transfers
    # (wallet/operations/fx.py): unlike the outside world's account it keeps its balance, which may go negative (the
    # house owes it).
    is_fx: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="active")
    created_at: Mapped[dt.datetime] = timestamp_now()
    updated_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("balance >= 0 OR is_fx", name="balance_not_negative"),
        CheckConstraint("held >= 0 AND (held <= balance OR is_fx)", name="held_within_balance"),
        CheckConstraint("is_system = (user_id IS NULL)", name="system_has_no_owner"),
        CheckConstraint("NOT is_fx OR (is_system AND held = 0)", name="fx_is_system"),
        CheckConstraint("number ~ '^[0-9]{10}$'", name="number_digits"),
        Index("uq_wallets_system_currency", currency, unique=True, postgresql_where=text("is_system AND NOT is_fx")),
        Index("uq_wallets_fx_currency", currency, unique=True, postgresql_where=text("is_fx")),
    )
