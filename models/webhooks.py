"""Webhook endpoints users register, and the deliveries of events to them and by e-mail, with their attempts."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False, index=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    # Event types to send, or ['*'] for all.
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    # The signing secret (whsec_...); during a rotation's grace period the previous one signs too.
    secret: Mapped[str] = mapped_column(String(64), nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(String(64))
    previous_secret_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # 'failing' once a delivery gave up after the retry period; a later success makes it 'active' again.
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="active")
    # The circuit breaker: attempts failed in a row; from WEBHOOK_BREAKER_FAILURES on, nothing of the endpoint is
    # claimed until breaker_until, and then one delivery at a time (a probe) until one succeeds.
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    breaker_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (CheckConstraint("status IN ('active', 'failing')", name="status"),)


class Delivery(Base):
    """One event to one channel: a webhook endpoint, or the user's e-mail address (endpoint_id NULL)."""

    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = uuid_pk()
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(255))
    # When a dispatcher may next claim it; a claim moves it past the delivery timeout (a lease).
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by a claim, cleared when the attempt is recorded: the row is in flight while it is in the future (the
    # per-endpoint and per-user caps count these; a dead process's rows stop counting when their lease ends).
    leased_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = timestamp_now()
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        CheckConstraint(
            "(channel = 'webhook') = (endpoint_id IS NOT NULL) AND channel IN ('webhook', 'email')", name="channel"
        ),
        Index("uq_deliveries_endpoint_id_event_id", "endpoint_id", "event_id", unique=True),
        Index("uq_deliveries_email_event_id", "event_id", unique=True, postgresql_where=text("channel = 'email'")),
        Index("ix_deliveries_endpoint_id_created_at_id", "endpoint_id", "created_at", "id"),
        # The webhook lane claims per endpoint, the e-mail lane in due order; the backlog gauge reads the oldest.
        Index(
            "ix_deliveries_endpoint_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending' AND channel = 'webhook'"),
        ),
        Index(
            "ix_deliveries_email_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending' AND channel = 'email'"),
        ),
        Index("ix_deliveries_pending_created_at", "channel", "created_at", postgresql_where=text("status = 'pending'")),
        Index("ix_deliveries_in_flight", "endpoint_id", postgresql_where=text("leased_until IS NOT NULL")),
    )
