"""Payment requests: a payee asks a payer for an amount, which the payer pays (a transfer) or declines."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class PaymentRequest(Base):
    __tablename__ = "payment_requests"

    id: Mapped[uuid.UUID] = uuid_pk()
    # The requester and the wallet the money goes to (theirs, in the request's currency).
    payee_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    payee_wallet_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False)
    payer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="OPEN")
    # The transfer that paid it, marked in that transfer's own commit (one request, one transfer).
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("transactions.id"), unique=True
    )
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[dt.datetime] = timestamp_now()
    updated_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('OPEN', 'PAID', 'DECLINED', 'CANCELLED', 'EXPIRED')", name="status"),
        CheckConstraint("(status = 'PAID') = (transaction_id IS NOT NULL)", name="paid_by_transaction"),
        # Each side's list, newest first (paging by created_at, id).
        Index("ix_payment_requests_payer_created", "payer_id", "created_at", "id"),
        Index("ix_payment_requests_payee_created", "payee_id", "created_at", "id"),
        # The expiry sweep's scan.
        Index("ix_payment_requests_open_expires_at", "expires_at", postgresql_where=text("status = 'OPEN'")),
    )
