"""transactions: the indexes of the columns most transactions leave NULL hold only the rows that set them

Revision ID: 0028_partial_indexes
Revises: 0027_entries_wallet_covering

hold_id (a hold's capture), reverses (a reversal), fx_quote_id (a cross-currency transfer) and provider with
provider_reference (a provider's deposit) are NULL in almost every transaction, and a B-tree keeps NULLs: every
transaction written added an entry to each of these four indexes (4 of the 24 index entries a transfer writes, in
transactions, entries, events and the pending list), which no query reads. Each query looks a value up, which the
index WHERE the column IS NOT NULL answers, and uniqueness never concerned NULLs. Each index is built again,
partial, under a new name CONCURRENTLY (docs/operations.md, migration policy), the old one dropped (CONCURRENTLY; the
unique constraint on fx_quote_id by ALTER TABLE, within the migration's lock_timeout), and the new one takes the old
name. Every step can be taken twice, so a migration stopped part way is run again as a whole.
"""

from alembic import op

revision = "0028_partial_indexes"
down_revision = "0027_entries_wallet_covering"
branch_labels = None
depends_on = None

# name: (columns, unique, the column most rows leave NULL)
PARTIAL = {
    "ix_transactions_hold_id": (["hold_id"], False, "hold_id"),
    "ix_transactions_reverses": (["reverses"], False, "reverses"),
    "uq_transactions_fx_quote_id": (["fx_quote_id"], True, "fx_quote_id"),
    "uq_transactions_provider_reference": (["provider", "provider_reference"], True, "provider_reference"),
}
CONSTRAINT = "uq_transactions_fx_quote_id"  # until now a unique constraint, not an index of its own


def _rebuild(partial: bool) -> None:
    """Each index built again (partial, or back to whole), one at a time. Each step may be taken again: a run that
    stopped part way (a lock_timeout) is run again from the start."""
    with op.get_context().autocommit_block():
        for name, (columns, unique, column) in PARTIAL.items():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_new")  # left, perhaps invalid, by such a run
            op.create_index(
                f"{name}_new",
                "transactions",
                columns,
                unique=unique,
                postgresql_where=f"{column} IS NOT NULL" if partial else None,
                postgresql_concurrently=True,
            )
            if name == CONSTRAINT:
                op.execute(f"ALTER TABLE transactions DROP CONSTRAINT IF EXISTS {name}")
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")
            if name == CONSTRAINT and not partial:
                op.execute(f"ALTER TABLE transactions ADD CONSTRAINT {name} UNIQUE USING INDEX {name}")


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
