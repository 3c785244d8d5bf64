"""Cross-currency transfers: exchange rates (current and every change), and the quotes a transfer executes."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Numeric, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk

# Rates are units of the quote currency per 1 base unit with exactly this many decimal places (wallet/operations/fx.py).
RATE_PLACES = 10
# A spread is a fraction (0.0025 = 0.25 %) with at most this many decimal places.
SPREAD_PLACES = 6


def _rate() -> Mapped[Decimal]:
    return mapped_column(Numeric(24, RATE_PLACES), nullable=False)


def _spread() -> Mapped[Decimal]:
    return mapped_column(Numeric(SPREAD_PLACES + 1, SPREAD_PLACES), nullable=False, server_default="0")


class FxRate(Base):
    """The current rate of one currency pair (one direction: base -> quote)."""

    __tablename__ = "fx_rates"

    base: Mapped[str] = mapped_column(String(3), primary_key=True)
    quote: Mapped[str] = mapped_column(String(3), primary_key=True)
    rate: Mapped[Decimal] = _rate()
    spread: Mapped[Decimal] = _spread()
    updated_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    updated_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("rate > 0", name="rate_positive"),
        CheckConstraint("spread >= 0 AND spread <= 0.1", name="spread_range"),
        CheckConstraint("base <> quote", name="distinct_currencies"),
    )


class FxRateChange(Base):
    """Every rate ever set, with who set it and when (append-only; a database trigger refuses edits)."""

    __tablename__ = "fx_rate_changes"

    id: Mapped[uuid.UUID] = uuid_pk()
    base: Mapped[str] = mapped_column(String(3), nullable=False)
    quote: Mapped[str] = mapped_column(String(3), nullable=False)
    rate: Mapped[Decimal] = _rate()
    spread: Mapped[Decimal] = _spread()
    set_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    created_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (Index("ix_fx_rate_changes_pair_created_at", "base", "quote", "created_at", "id"),)


class FxQuote(Base):
    """A rate and both amounts offered to one user for one pair of wallets until expires_at; a COMPLETED transfer
    uses it (used_at, and transactions.fx_quote_id, unique) in the commit that moves the money."""

    __tablename__ = "fx_quotes"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False, index=True)
    from_wallet_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False)
    to_wallet_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False)
    source_currency: Mapped[str] = mapped_column(String(3), nullable=False)
    destination_currency: Mapped[str] = mapped_column(String(3), nullable=False)
    market_rate: Mapped[Decimal] = _rate()
    spread: Mapped[Decimal] = _spread()
    # The rate the customer gets: market_rate * (1 - spread), rounded down to RATE_PLACES.
    rate: Mapped[Decimal] = _rate()
    source_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    destination_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Which amount the customer gave ("source" or "destination"); the other was computed and rounded.
    fixed: Mapped[str] = mapped_column(String(16), nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("source_amount > 0 AND destination_amount > 0", name="amounts_positive"),
        CheckConstraint("source_currency <> destination_currency", name="distinct_currencies"),
        CheckConstraint("fixed IN ('source', 'destination')", name="fixed"),
        CheckConstraint("rate > 0 AND market_rate > 0", name="rates_positive"),
    )
