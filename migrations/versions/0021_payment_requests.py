"""payment requests: a payee asks a payer for an amount; the transfer that pays one is linked from it; and
transactions.metadata, the client's labels on a money operation, with a GIN index for history's filter

Revision ID: 0021_payment_requests
Revises: 0020_instances

payment_requests is new and empty: its indexes are built in the migration's transaction. transactions is one of the
big tables: its new column has no default (no rewrite) and its index is built and dropped CONCURRENTLY
(docs/operations.md, migration policy), outside the migration's transaction.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0021_payment_requests"
down_revision = "0020_instances"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_requests",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("payee_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("payee_wallet_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("payer_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="OPEN", nullable=False),
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_requests_amount_positive")),
        sa.CheckConstraint(
            "status IN ('OPEN', 'PAID', 'DECLINED', 'CANCELLED', 'EXPIRED')", name=op.f("ck_payment_requests_status")
        ),
        sa.CheckConstraint(
            "(status = 'PAID') = (transaction_id IS NOT NULL)", name=op.f("ck_payment_requests_paid_by_transaction")
        ),
        sa.ForeignKeyConstraint(["payee_id"], ["users.id"], name=op.f("fk_payment_requests_payee_id_users")),
        sa.ForeignKeyConstraint(
            ["payee_wallet_id"], ["wallets.id"], name=op.f("fk_payment_requests_payee_wallet_id_wallets")
        ),
        sa.ForeignKeyConstraint(["payer_id"], ["users.id"], name=op.f("fk_payment_requests_payer_id_users")),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name=op.f("fk_payment_requests_transaction_id_transactions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_requests")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_payment_requests_transaction_id")),
    )
    op.create_index("ix_payment_requests_payer_created", "payment_requests", ["payer_id", "created_at", "id"])
    op.create_index("ix_payment_requests_payee_created", "payment_requests", ["payee_id", "created_at", "id"])
    op.create_index(
        "ix_payment_requests_open_expires_at",
        "payment_requests",
        ["expires_at"],
        postgresql_where=sa.text("status = 'OPEN'"),
    )
    op.add_column("transactions", sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("transactions", sa.Column("payment_request_id", postgresql.UUID(as_uuid=True), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_transactions_metadata",
            "transactions",
            ["metadata"],
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
            postgresql_where=sa.text("metadata IS NOT NULL"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_transactions_metadata", table_name="transactions", postgresql_concurrently=True)
    op.drop_column("transactions", "payment_request_id")
    op.drop_column("transactions", "metadata")
    op.drop_table("payment_requests")
