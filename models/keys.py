"""API keys: a user's scoped credentials for services; only a hash of each secret is stored."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk

SCOPES = ("read", "deposit", "withdraw", "transfer")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    # The secret's first characters ("wk_" and 12 hex digits): how a presented key is found, and shown to its owner.
    prefix: Mapped[str] = mapped_column(String(15), nullable=False, unique=True)
    # SHA-256 of the whole secret, hex; the secret has 256 random bits, so a slow hash would add nothing.
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)), nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # In the future while a rolled-over key is in its grace period.
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint(
            f"cardinality(scopes) > 0 AND scopes <@ ARRAY[{', '.join(repr(s) for s in SCOPES)}]::varchar[]",
            name="scopes",
        ),
        Index("ix_api_keys_user_id_created_at_id", "user_id", "created_at", "id"),
    )
