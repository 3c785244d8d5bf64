"""Transfer batches: one client request of many transfers (POST /transfers/batch), its key and its answer's parts."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ARRAY, CheckConstraint, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class TransferBatch(Base):
    __tablename__ = "transfer_batches"

    id: Mapped[uuid.UUID] = uuid_pk()
    initiator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("api_keys.id"))
    # The batch's Idempotency-Key (unique per caller) and the hash of the whole request it was sent with.
    idempotency_key: Mapped[str] = mapped_column(String(255), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="PENDING")
    # Per item, in the request's order: the client's reference, the transaction recorded for it (NULL when the item
    # was refused before anything was recorded) and that refusal (JSON null otherwise).
    item_references: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    transaction_ids: Mapped[list[uuid.UUID | None]] = mapped_column(ARRAY(UUID(as_uuid=True)), nullable=False)
    item_errors: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[dt.datetime] = timestamp_now()
    # As on a transaction: a retry of the key takes a PENDING batch over once its attempt's claim is this old.
    claimed_at: Mapped[dt.datetime] = timestamp_now()
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("mode IN ('atomic', 'independent')", name="mode"),
        CheckConstraint("status IN ('PENDING', 'COMPLETED', 'FAILED')", name="status"),
        Index("uq_transfer_batches_initiator_idempotency_key", "initiator_id", "idempotency_key", unique=True),
    )
