"""The ledger: transactions (the money path's rows), their double entries, and daily usage for limits."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, ForeignKey, Identity, Index, Numeric, String, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, timestamp_now, uuid_pk


class Transaction(Base):
    __tablename__ = "transactions"

    id: Mapped[uuid.UUID] = uuid_pk()
    # Insertion order; the keyset for cursor pagination.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), nullable=False, unique=True)
    reference: Mapped[str] = mapped_column(String(24), nullable=False, unique=True)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="PENDING")
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    source_wallet_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"))
    destination_wallet_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"))
    # Owners of the two wallets, denormalised so a user's history is one index range scan.
    source_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    destination_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"))
    # Who asked for it (the owner, or the admin who credited); idempotency keys are scoped to them.
    initiator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # The API key the initiator used, if any (who initiated it, for the owner's history).
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("api_keys.id"))
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str | None] = mapped_column(String(255))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = timestamp_now()
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # A deposit paid through a payment provider: its name, the reference it knows the payment by, and the checkout
    # page it gave us (stored so a replay of the request answers with the same page).
    provider: Mapped[str | None] = mapped_column(String(16))
    provider_reference: Mapped[str | None] = mapped_column(String(64))
    authorization_url: Mapped[str | None] = mapped_column(String(1024))
    # The hold this transfer captures from (wallet/operations/holds.py).
    # The client's own labels (a flat object of strings: handlers/field_types.py Metadata), filtered with @>.
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSONB)
    # The payment request this transfer paid (wallet/operations/payment_requests.py), which names it back; the audit
    # checks the two links agree (no foreign key: adding one would scan this big table under a lock).
    payment_request_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    hold_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("holds.id"))
    # A REVERSAL's original (wallet/operations/reversals.py); on the original, how much of it COMPLETED reversals gave
    # back.
    reverses: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("transactions.id"))
    reversed_amount: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # When the attempt executing a PENDING row started; a keyed row whose claim is older than PENDING_TIMEOUT was
    # abandoned (its attempt died), and a retry with the same key takes it over.
    claimed_at: Mapped[dt.datetime] = timestamp_now()
    # A cross-currency transfer (wallet/operations/fx.py), set when it COMPLETED: the quote it used (once: unique), the
    # rate, and what the payee received; amount and currency above are what the payer paid.
    fx_quote_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("fx_quotes.id"))
    fx_rate: Mapped[Decimal | None] = mapped_column(Numeric(24, 10))
    destination_amount: Mapped[int | None] = mapped_column(BigInteger)
    destination_currency: Mapped[str | None] = mapped_column(String(3))

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("(provider IS NULL) = (provider_reference IS NULL)", name="provider_reference"),
        CheckConstraint("type IN ('DEPOSIT', 'WITHDRAWAL', 'TRANSFER', 'REVERSAL')", name="type"),
        CheckConstraint("reversed_amount >= 0 AND reversed_amount <= amount", name="reversed_within_amount"),
        CheckConstraint("status IN ('PENDING', 'COMPLETED', 'FAILED')", name="status"),
        CheckConstraint(
            "(fx_quote_id IS NULL) = (fx_rate IS NULL) AND (fx_quote_id IS NULL) = (destination_amount IS NULL) "
            "AND (fx_quote_id IS NULL) = (destination_currency IS NULL)",
            name="fx_complete",
        ),
        Index("uq_transactions_initiator_idempotency_key", "initiator_id", "idempotency_key", unique=True),
        Index("ix_transactions_source_wallet_seq", "source_wallet_id", "seq"),
        Index("ix_transactions_destination_wallet_seq", "destination_wallet_id", "seq"),
        Index("ix_transactions_source_user_seq", "source_user_id", "seq"),
        Index("ix_transactions_destination_user_seq", "destination_user_id", "seq"),
        # The columns most transactions leave NULL are indexed where they are set (0028_partial_indexes).
        Index(
            "uq_transactions_provider_reference",
            "provider",
            "provider_reference",
            unique=True,
            postgresql_where=text("provider_reference IS NOT NULL"),
        ),
        Index(
            "uq_transactions_fx_quote_id", "fx_quote_id", unique=True, postgresql_where=text("fx_quote_id IS NOT NULL")
        ),
        Index("ix_transactions_hold_id", "hold_id", postgresql_where=text("hold_id IS NOT NULL")),
        Index("ix_transactions_reverses", "reverses", postgresql_where=text("reverses IS NOT NULL")),
        # History's metadata[KEY]=VALUE filter (metadata @> {...}); built CONCURRENTLY (0021_payment_requests).
        Index(
            "ix_transactions_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
            postgresql_where=text("metadata IS NOT NULL"),
        ),
        # Room on each page for a row's completion to be written in place (migrations/versions/0016_pending_list.py).
        {"postgresql_with": {"fillfactor": 70}},
    )


class PendingTransaction(Base):
    """The ids of the transactions still PENDING, kept by triggers on transactions (0016_pending_list): the recovery
    sweeps' way to them, since an index naming the status would make every completion rewrite all the indexes."""

    __tablename__ = "pending_transactions"

    transaction_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)


class Entry(Base):
    """One leg of a transaction. Append-only; a transaction's entries sum to zero (a database trigger checks)."""

    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    transaction_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("transactions.id"), nullable=False, index=True
    )
    wallet_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("wallets.id"), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    # The wallet's balance right after this entry (NULL on system accounts, which keep no balance).
    balance_after: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = timestamp_now()

    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        # A statement: one wallet's entries over a period.
        Index("ix_entries_wallet_id_created_at", "wallet_id", "created_at"),
        # The audit: each wallet's entries in the order they were let in, with what it sums, from the index alone
        # (migrations/versions/0027_entries_wallet_covering.py).
        Index("ix_entries_wallet_id_id", "wallet_id", "id", postgresql_include=["amount", "balance_after"]),
    )


class DailyUsage(Base):
    """Completed withdrawals/outgoing transfers per user, currency, kind and UTC day; its row lock serialises limits."""

    __tablename__ = "daily_usage"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
