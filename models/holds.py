"""Holds: an amount reserved in a payer's wallet for a payee, captured (in parts) or released later."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class Hold(Base):
    __tablename__ = "holds"

    id: Mapped[uuid.UUID] = uuid_pk()
    from_wallet_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False, index=True
    )
    to_wallet_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False, index=True
    )
    # Who placed it; idempotency keys are scoped to them, as for transactions.
    initiator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    captured_amount: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="ACTIVE")
    description: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[dt.datetime] = timestamp_now()
    updated_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("captured_amount >= 0 AND captured_amount <= amount", name="captured_within_amount"),
        CheckConstraint("status IN ('ACTIVE', 'CAPTURED', 'VOIDED', 'EXPIRED')", name="status"),
        Index("uq_holds_initiator_idempotency_key", "initiator_id", "idempotency_key", unique=True),
        # The expiry sweep's scan.
        Index("ix_holds_active_expires_at", "expires_at", postgresql_where=text("status = 'ACTIVE'")),
    )
