"""Payout accounts: the bank accounts a user pays out to, as Paystack resolved and registered them."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import DateTime, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import UUID
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
