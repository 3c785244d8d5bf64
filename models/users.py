"""Users, their login sessions (one row per login; refresh tokens rotate within it), their second factor (TOTP), and
their external identities."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
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
    # When and how its user last proved who they are: the sign-in, then each step-up (the access tokens' auth_time
    # and amr claims).
    authenticated_at: Mapped[dt.datetime] = timestamp_now()
    amr: Mapped[list[str]] = mapped_column(ARRAY(String(16)), nullable=False, server_default=text("'{}'"))
    # What the owner sees in their list of sessions. last_used_at moves at sign-in, refresh and step-up only, never
    # per request: an active client refreshes every ACCESS_TOKEN_TTL, so it is that coarse.
    user_agent: Mapped[str | None] = mapped_column(String(255))
    ip: Mapped[str | None] = mapped_column(String(64))
    last_used_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        # Every process polls the recent revocations each second (wallet/identity/revocations.py).
        Index("ix_sessions_revoked_at", revoked_at, postgresql_where=revoked_at.is_not(None)),
    )


class TwoFactor(Base):
    """A user's TOTP second factor: pending from enrolment until a first code confirms it, then on."""

    __tablename__ = "two_factor"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), primary_key=True)
    # The shared secret, encrypted with a key derived from JWT_SECRET (wallet/identity/twofactor.py): a copy of the
    # database alone does not give it away.
    secret: Mapped[str] = mapped_column(String(255), nullable=False)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The TOTP time step of the last code accepted: a code is taken only for a later step, so each works once.
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    # SHA-256 of each recovery code not used yet (they are random enough that a slow hash would add nothing).
    recovery_hashes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), nullable=False, server_default=text("'{}'"))
    created_at: Mapped[dt.datetime] = timestamp_now()


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
