"""The event outbox: one row per thing a user is told about, written in the commit of the change it reports."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, String
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now


class Event(Base):
    __tablename__ = "events"

    # Taken while the user's EventHead row is locked, so one user's ids increase in commit order
    # (wallet/notify/events.py).
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (Index("ix_events_user_id_id", "user_id", "id"),)


class EventHead(Base):
    """One row per user; writing an event locks it until commit, which orders that user's event ids."""

    __tablename__ = "event_heads"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), primary_key=True)
    last_event_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
