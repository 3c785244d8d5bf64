"""holds: reserved amounts (the holds table, wallets.held) and the transfers that capture them

Revision ID: 0011_holds
Revises: 0010_notify
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011_holds'
down_revision = '0010_notify'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'holds',
        sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('from_wallet_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('to_wallet_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('initiator_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('idempotency_key', sa.String(length=255), nullable=True),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('captured_amount', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('status', sa.String(length=16), server_default='ACTIVE', nullable=False),
        sa.Column('description', sa.String(length=255), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('amount > 0', name=op.f('ck_holds_amount_positive')),
        sa.CheckConstraint('captured_amount >= 0 AND captured_amount <= amount',
                           name=op.f('ck_holds_captured_within_amount')),
        sa.CheckConstraint("status IN ('ACTIVE', 'CAPTURED', 'VOIDED', 'EXPIRED')", name=op.f('ck_holds_status')),
        sa.ForeignKeyConstraint(['from_wallet_id'], ['wallets.id'], name=op.f('fk_holds_from_wallet_id_wallets')),
        sa.ForeignKeyConstraint(['to_wallet_id'], ['wallets.id'], name=op.f('fk_holds_to_wallet_id_wallets')),
        sa.ForeignKeyConstraint(['initiator_id'], ['users.id'], name=op.f('fk_holds_initiator_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_holds')),
    )
    op.create_index('ix_holds_from_wallet_id', 'holds', ['from_wallet_id'], unique=False)
    op.create_index('ix_holds_to_wallet_id', 'holds', ['to_wallet_id'], unique=False)
    op.create_index('uq_holds_initiator_idempotency_key', 'holds', ['initiator_id', 'idempotency_key'], unique=True)
    op.create_index('ix_holds_active_expires_at', 'holds', ['expires_at'], unique=False,
                    postgresql_where=sa.text("status = 'ACTIVE'"))
    op.add_column('wallets', sa.Column('held', sa.BigInteger(), server_default='0', nullable=False))
    op.create_check_constraint(op.f('ck_wallets_held_within_balance'), 'wallets', 'held >= 0 AND held <= balance')
    op.add_column('transactions', sa.Column('hold_id', postgresql.UUID(as_uuid=True), nullable=True))
    op.create_foreign_key(op.f('fk_transactions_hold_id_holds'), 'transactions', 'holds', ['hold_id'], ['id'])
    op.create_index('ix_transactions_hold_id', 'transactions', ['hold_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_transactions_hold_id', table_name='transactions')
    op.drop_constraint(op.f('fk_transactions_hold_id_holds'), 'transactions', type_='foreignkey')
    op.drop_column('transactions', 'hold_id')
    op.drop_constraint(op.f('ck_wallets_held_within_balance'), 'wallets', type_='check')
    op.drop_column('wallets', 'held')
    op.drop_index('ix_holds_active_expires_at', table_name='holds', postgresql_where=sa.text("status = 'ACTIVE'"))
    op.drop_index('uq_holds_initiator_idempotency_key', table_name='holds')
    op.drop_index('ix_holds_to_wallet_id', table_name='holds')
    op.drop_index('ix_holds_from_wallet_id', table_name='holds')
    op.drop_table('holds')
