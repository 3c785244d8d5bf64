"""Scheduled and recurring transfers, and the record of each occurrence the scheduler ran
(wallet/operations/schedules.py)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class ScheduledTransfer(Base):
    __tablename__ = "scheduled_transfers"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    from_wallet_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False)
    # The recipient's wallet, resolved once when the schedule was made (a username or phone names a user, whose
    # wallets may change; the schedule keeps paying the one it was made for).
    to_wallet_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    start_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    every: Mapped[str | None] = mapped_column(String(8))
    count: Mapped[int | None] = mapped_column(Integer)
    until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="ACTIVE")
    # The occurrence due next (its number from 0, and when it is due); NULL once there is none.
    next_index: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    runs: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[dt.datetime] = timestamp_now()
    updated_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('ACTIVE', 'PAUSED', 'CANCELLED', 'FINISHED')", name="status"),
        CheckConstraint("every IS NULL OR every IN ('day', 'week', 'month')", name="every"),
        CheckConstraint("count IS NULL OR until IS NULL", name="count_or_until"),
        # The owner's list, newest first.
        Index("ix_scheduled_transfers_user_created", "user_id", "created_at", "id"),
        # The scheduler's scan of what is due.
        Index("ix_scheduled_transfers_due", "next_run_at", postgresql_where=text("status = 'ACTIVE'")),
    )


class ScheduledOccurrence(Base):
    """One occurrence the scheduler ran: the transfer it made, or why it was refused (then transaction_id is the
    FAILED transaction, or NULL when the refusal came before one was recorded)."""

    __tablename__ = "scheduled_occurrences"

    schedule_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("scheduled_transfers.id"), primary_key=True
    )
    occurrence: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurs_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("transactions.id"))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (CheckConstraint("status IN ('COMPLETED', 'FAILED')", name="status"),)
