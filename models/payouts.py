"""Payout accounts: the bank accounts a user pays out to, as Paystack resolved and registered them; and payouts, money
sent to one of them."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class PayoutAccount(Base):
    __tablename__ = "payout_accounts"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    bank_code: Mapped[str] = mapped_column(String(16), nullable=False)
    bank_name: Mapped[str] = mapped_column(String(100), nullable=False)
    account_number: Mapped[str] = mapped_column(String(20), nullable=False)
    # The holder's name as the bank knows it (Paystack's /bank/resolve): what the user checks before paying out.
    account_name: Mapped[str] = mapped_column(String(200), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    # Paystack's transfer recipient (RCP_...): what a transfer names.
    recipient_code: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = timestamp_now()
    # Deleted accounts are kept (payouts made to them still name them) and no longer listed or usable.
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # One live entry per account and user: adding it again answers the one there is.
        Index(
            "uq_payout_accounts_user_bank_account",
            "user_id",
            "bank_code",
            "account_number",
            "currency",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )


class Payout(Base):
    """Money leaving a wallet for a payout account through a Paystack transfer (wallet/operations/payouts.py): held
    first, then captured as a WITHDRAWAL or released on Paystack's word."""

    __tablename__ = "payouts"

    id: Mapped[uuid.UUID] = uuid_pk()
    # The owner, who asked for it; idempotency keys are scoped to them.
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    wallet_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False)
    payout_account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("payout_accounts.id"), nullable=False
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSONB)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="PENDING")
    # The reference Paystack knows the transfer by (ours: sending it again is refused there as a duplicate).
    reference: Mapped[str] = mapped_column(String(24), nullable=False, unique=True)
    # The hold that reserves the amount until Paystack's word (its payee is the currency's system account).
    hold_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("holds.id"), nullable=False, unique=True)
    # The WITHDRAWAL that captured the hold (COMPLETED and REVERSED), and the REVERSAL that gave it back (REVERSED).
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("transactions.id"), unique=True
    )
    reversal_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("transactions.id"), unique=True
    )
    # Paystack's last word on the transfer (pending, success, failed, reversed, ...) and its code (TRF_...).
    provider_status: Mapped[str | None] = mapped_column(String(32))
    transfer_code: Mapped[str | None] = mapped_column(String(64))
    # When an attempt last started sending the transfer (a claim: another attempt sends only once it is older than
    # the provider's timeout, and verifies first), and when Paystack's acknowledgement was recorded.
    send_claimed_at: Mapped[dt.datetime] = timestamp_now()
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = timestamp_now()
    updated_at: Mapped[dt.datetime] = timestamp_now()
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('PENDING', 'COMPLETED', 'FAILED', 'REVERSED')", name="status"),
        CheckConstraint("(status IN ('COMPLETED', 'REVERSED')) = (transaction_id IS NOT NULL)", name="captured"),
        CheckConstraint("(status = 'REVERSED') = (reversal_id IS NOT NULL)", name="reversed"),
        Index("uq_payouts_user_idempotency_key", "user_id", "idempotency_key", unique=True),
        # The owner's list and the admin's, newest first (paging by created_at, id).
        Index("ix_payouts_user_created", "user_id", "created_at", "id"),
        Index("ix_payouts_created", "created_at", "id"),
        # The verification sweep's scan.
        Index("ix_payouts_pending_created", "created_at", postgresql_where=text("status = 'PENDING'")),
    )
