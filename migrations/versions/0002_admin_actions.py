"""admin actions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 07:26:51.355821
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('admin_actions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('admin_id', sa.UUID(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('target_user_id', sa.UUID(), nullable=True),
    sa.Column('target_wallet_id', sa.UUID(), nullable=True),
    sa.Column('transaction_id', sa.UUID(), nullable=True),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("action IN ('freeze', 'unfreeze', 'activate', 'deactivate', 'credit')", name=op.f('ck_admin_actions_action')),
    sa.ForeignKeyConstraint(['admin_id'], ['users.id'], name=op.f('fk_admin_actions_admin_id_users')),
    sa.ForeignKeyConstraint(['target_user_id'], ['users.id'], name=op.f('fk_admin_actions_target_user_id_users')),
    sa.ForeignKeyConstraint(['target_wallet_id'], ['wallets.id'], name=op.f('fk_admin_actions_target_wallet_id_wallets')),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], name=op.f('fk_admin_actions_transaction_id_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_admin_actions')),
    sa.UniqueConstraint('transaction_id', name=op.f('uq_admin_actions_transaction_id'))
    )
    op.create_index('ix_users_created_at_id', 'users', ['created_at', 'id'], unique=False)
    op.create_index('ix_admin_actions_created_at_id', 'admin_actions', ['created_at', 'id'], unique=False)
    op.create_index('ix_admin_actions_target_user_created_at_id', 'admin_actions', ['target_user_id', 'created_at', 'id'], unique=False)

    # The action log is evidence: rows are only ever added, never changed, deleted or truncated.
    # append_only() comes from 0001, where it guards the ledger entries the same way.
    op.execute("""
        CREATE TRIGGER admin_actions_append_only BEFORE UPDATE OR DELETE ON admin_actions
            FOR EACH ROW EXECUTE FUNCTION append_only();
        CREATE TRIGGER admin_actions_no_truncate BEFORE TRUNCATE ON admin_actions
            FOR EACH STATEMENT EXECUTE FUNCTION append_only();
    """)


def downgrade() -> None:
    op.execute("""
        DROP TRIGGER admin_actions_no_truncate ON admin_actions;
        DROP TRIGGER admin_actions_append_only ON admin_actions;
    """)
    op.drop_index('ix_admin_actions_target_user_created_at_id', table_name='admin_actions')
    op.drop_index('ix_admin_actions_created_at_id', table_name='admin_actions')
    op.drop_index('ix_users_created_at_id', table_name='users')
    op.drop_table('admin_actions')
