"""entries: the index on wallet_id becomes (wallet_id, id) INCLUDE (amount, balance_after), for the audit

Revision ID: 0027_entries_wallet_covering
Revises: 0026_schema_policy

The ledger audit (wallet/ledger/audit.py) sums each wallet's entries and checks each entry's running balance in
the order the wallet's row lock let them in (their ids). On ix_entries_wallet_id (wallet_id alone) that was a
fetch from the table for every entry, in wallet order, not the table's: at ten million entries the running-balance
check took 64 s and the balance check 10 s (make bench --world large, bench/RESULTS.md). On this index both read
the index alone, already in (wallet_id, id) order: 16 s and 4 s. It answers whatever the old one did (wallet_id
leads), so the old one goes. entries is one of the big tables: both are built and dropped CONCURRENTLY
(docs/operations.md, migration policy), outside the migration's transaction.
"""

from alembic import op

revision = "0027_entries_wallet_covering"
down_revision = "0026_schema_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_entries_wallet_id_id",
            "entries",
            ["wallet_id", "id"],
            postgresql_include=["amount", "balance_after"],
            postgresql_concurrently=True,
        )
        op.drop_index("ix_entries_wallet_id", table_name="entries", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_entries_wallet_id", "entries", ["wallet_id"], postgresql_concurrently=True)
        op.drop_index("ix_entries_wallet_id_id", table_name="entries", postgresql_concurrently=True)
