"""pending list: the PENDING transactions listed in a table of their own, so completing one is a HOT update

Completing a transaction changes its status. While a partial index (ix_transactions_pending, WHERE status =
'PENDING') named the column, every completion wrote a new entry into each of the table's thirteen indexes; now no
index names status (nor completed_at), so PostgreSQL updates the row in place on its page (a heap-only tuple), and
the table keeps room for that on each page (fillfactor 70). The recovery sweeps find the PENDING rows through
pending_transactions instead: triggers add a row's id when it is inserted PENDING and remove it when it leaves
PENDING, whichever statement does either, so the list cannot drift from the rows; the audit checks it.

Revision ID: 0016_pending_list
Revises: 0015_group_commit
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016_pending_list"
down_revision = "0015_group_commit"
branch_labels = None
depends_on = None

TRIGGERS = r"""
CREATE FUNCTION transactions_pending_list() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pending_transactions (transaction_id) VALUES (NEW.id);
    ELSE
        DELETE FROM pending_transactions WHERE transaction_id = OLD.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER transactions_pending_added AFTER INSERT ON transactions
    FOR EACH ROW WHEN (NEW.status = 'PENDING') EXECUTE FUNCTION transactions_pending_list();
CREATE TRIGGER transactions_pending_left AFTER UPDATE OF status ON transactions
    FOR EACH ROW WHEN (OLD.status = 'PENDING' AND NEW.status <> 'PENDING') EXECUTE FUNCTION transactions_pending_list();
"""


def upgrade() -> None:
    op.create_table(
        "pending_transactions",
        sa.Column("transaction_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_pending_transactions")),
    )
    op.execute("INSERT INTO pending_transactions SELECT id FROM transactions WHERE status = 'PENDING'")
    op.execute(TRIGGERS)
    op.drop_index("ix_transactions_pending", table_name="transactions", postgresql_where=sa.text("status = 'PENDING'"))
    op.execute("ALTER TABLE transactions SET (fillfactor = 70)")


def downgrade() -> None:
    op.execute("ALTER TABLE transactions RESET (fillfactor)")
    op.create_index(
        "ix_transactions_pending", "transactions", ["claimed_at"], postgresql_where=sa.text("status = 'PENDING'")
    )
    op.execute("DROP TRIGGER transactions_pending_left ON transactions")
    op.execute("DROP TRIGGER transactions_pending_added ON transactions")
    op.execute("DROP FUNCTION transactions_pending_list")
    op.drop_table("pending_transactions")
