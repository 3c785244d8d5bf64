"""Users, their login sessions (one row per login; refresh tokens rotate within it), and their external identities."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = uuid_pk()
    username: Mapped[str] = mapped_column(String(32), nullable=False)
    email: Mapped[str | None] = mapped_column(String(254))
    # wallet/identifiers.email_key(email): what addresses are compared by (Python's case folding, not lower()).
    email_key: Mapped[str | None] = mapped_column(String)
    phone: Mapped[str | None] = mapped_column(String(16))
    # NULL for an account made by Google sign-in until its owner sets a password.
    password_hash: Mapped[str | None] = mapped_column(String(60))
    role: Mapped[str] = mapped_column(String(16), nullable=False, server_default="user")
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="active")
    created_at: Mapped[dt.datetime] = timestamp_now()
    updated_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("role IN ('user', 'admin')", name="role"),
        CheckConstraint("status IN ('active', 'frozen', 'inactive')", name="status"),
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("uq_users_email_key", email_key, unique=True),
        Index("uq_users_phone", phone, unique=True),
        # The admin user list pages newest first on (created_at, id).
        Index("ix_users_created_at_id", created_at, id),
    )


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False, index=True)
    refresh_jti: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    created_at: Mapped[dt.datetime] = timestamp_now()
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # Every process polls the recent revocations each second (wallet/identity/revocations.py).
        Index("ix_sessions_revoked_at", revoked_at, postgresql_where=revoked_at.is_not(None)),
    )


class UserIdentity(Base):
    """A sign-in provider's account (Google's `sub`) linked to one of ours; found by the subject, never by e-mail."""

    __tablename__ = "user_identities"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[dt.datetime] = timestamp_now()

    # One account per provider and user.
    __table_args__ = (UniqueConstraint("user_id", "provider"),)
