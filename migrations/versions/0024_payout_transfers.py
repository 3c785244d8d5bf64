"""payout transfers: payouts, money held in a wallet and sent to a payout account through Paystack Transfers

Revision ID: 0024_payout_transfers
Revises: 0023_payouts
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0024_payout_transfers"
down_revision = "0023_payouts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new, empty table: its indexes are built with it (nothing writes to it yet).
    op.create_table(
        'payouts',
        sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('user_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('wallet_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('payout_account_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('idempotency_key', sa.String(length=255), nullable=True),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=True),
        sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('status', sa.String(length=16), server_default='PENDING', nullable=False),
        sa.Column('reference', sa.String(length=24), nullable=False),
        sa.Column('hold_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('transaction_id', postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column('reversal_id', postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column('provider_status', sa.String(length=32), nullable=True),
        sa.Column('transfer_code', sa.String(length=64), nullable=True),
        sa.Column('send_claimed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('failure_code', sa.String(length=64), nullable=True),
        sa.Column('failure_reason', sa.String(length=255), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint('amount > 0', name=op.f('ck_payouts_amount_positive')),
        sa.CheckConstraint("status IN ('PENDING', 'COMPLETED', 'FAILED', 'REVERSED')", name=op.f('ck_payouts_status')),
        sa.CheckConstraint("(status IN ('COMPLETED', 'REVERSED')) = (transaction_id IS NOT NULL)",
                           name=op.f('ck_payouts_captured')),
        sa.CheckConstraint("(status = 'REVERSED') = (reversal_id IS NOT NULL)", name=op.f('ck_payouts_reversed')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_payouts_user_id_users')),
        sa.ForeignKeyConstraint(['wallet_id'], ['wallets.id'], name=op.f('fk_payouts_wallet_id_wallets')),
        sa.ForeignKeyConstraint(['payout_account_id'], ['payout_accounts.id'],
                                name=op.f('fk_payouts_payout_account_id_payout_accounts')),
        sa.ForeignKeyConstraint(['hold_id'], ['holds.id'], name=op.f('fk_payouts_hold_id_holds')),
        sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'],
                                name=op.f('fk_payouts_transaction_id_transactions')),
        sa.ForeignKeyConstraint(['reversal_id'], ['transactions.id'], name=op.f('fk_payouts_reversal_id_transactions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_payouts')),
        sa.UniqueConstraint('reference', name=op.f('uq_payouts_reference')),
        sa.UniqueConstraint('hold_id', name=op.f('uq_payouts_hold_id')),
        sa.UniqueConstraint('transaction_id', name=op.f('uq_payouts_transaction_id')),
        sa.UniqueConstraint('reversal_id', name=op.f('uq_payouts_reversal_id')),
    )
    op.create_index('uq_payouts_user_idempotency_key', 'payouts', ['user_id', 'idempotency_key'], unique=True)
    op.create_index('ix_payouts_user_created', 'payouts', ['user_id', 'created_at', 'id'])
    op.create_index('ix_payouts_created', 'payouts', ['created_at', 'id'])
    op.create_index('ix_payouts_pending_created', 'payouts', ['created_at'],
                    postgresql_where=sa.text("status = 'PENDING'"))


def downgrade() -> None:
    op.drop_table('payouts')
