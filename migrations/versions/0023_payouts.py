"""payouts: the bank accounts users pay out to (payout_accounts), as Paystack resolved and registered them

Revision ID: 0023_payouts
Revises: 0022_schedules
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0023_payouts"
down_revision = "0022_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new, empty table: its index is built with it (nothing writes to it yet).
    op.create_table(
        'payout_accounts',
        sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('user_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('bank_code', sa.String(length=16), nullable=False),
        sa.Column('bank_name', sa.String(length=100), nullable=False),
        sa.Column('account_number', sa.String(length=20), nullable=False),
        sa.Column('account_name', sa.String(length=200), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('recipient_code', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_payout_accounts_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_payout_accounts')),
    )
    op.create_index('uq_payout_accounts_user_bank_account', 'payout_accounts',
                    ['user_id', 'bank_code', 'account_number', 'currency'], unique=True,
                    postgresql_where=sa.text('deleted_at IS NULL'))


def downgrade() -> None:
    op.drop_index('uq_payout_accounts_user_bank_account', table_name='payout_accounts')
    op.drop_table('payout_accounts')
