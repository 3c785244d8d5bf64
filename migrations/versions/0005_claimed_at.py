"""claim of a pending transaction: a retry of an abandoned operation takes it over

Revision ID: 0005_claimed_at
Revises: 0004_auth_hardening
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_claimed_at'
down_revision = '0004_auth_hardening'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('transactions', sa.Column('claimed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                                            nullable=False))
    op.execute("UPDATE transactions SET claimed_at = created_at WHERE status = 'PENDING'")
    op.drop_index('ix_transactions_pending', table_name='transactions', postgresql_where=sa.text("status = 'PENDING'"))
    op.create_index('ix_transactions_pending', 'transactions', ['claimed_at'], unique=False,
                    postgresql_where=sa.text("status = 'PENDING'"))


def downgrade() -> None:
    op.drop_index('ix_transactions_pending', table_name='transactions', postgresql_where=sa.text("status = 'PENDING'"))
    op.create_index('ix_transactions_pending', 'transactions', ['created_at'], unique=False,
                    postgresql_where=sa.text("status = 'PENDING'"))
    op.drop_column('transactions', 'claimed_at')
