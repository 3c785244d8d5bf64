"""schedules: scheduled and recurring transfers, and each occurrence the scheduler ran

Revision ID: 0022_schedules
Revises: 0021_payment_requests
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0022_schedules"
down_revision = "0021_payment_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Two new tables: their indexes are built while they are empty (no CONCURRENTLY needed); the foreign key to
    # transactions takes that table's lock only for the moment the constraint is created.
    op.create_table(
        'scheduled_transfers',
        sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('user_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('from_wallet_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('to_wallet_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=True),
        sa.Column('start_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('every', sa.String(length=8), nullable=True),
        sa.Column('count', sa.Integer(), nullable=True),
        sa.Column('until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('status', sa.String(length=16), server_default='ACTIVE', nullable=False),
        sa.Column('next_index', sa.Integer(), server_default='0', nullable=False),
        sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('runs', sa.Integer(), server_default='0', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('amount > 0', name=op.f('ck_scheduled_transfers_amount_positive')),
        sa.CheckConstraint("status IN ('ACTIVE', 'PAUSED', 'CANCELLED', 'FINISHED')",
                           name=op.f('ck_scheduled_transfers_status')),
        sa.CheckConstraint("every IS NULL OR every IN ('day', 'week', 'month')",
                           name=op.f('ck_scheduled_transfers_every')),
        sa.CheckConstraint('count IS NULL OR until IS NULL', name=op.f('ck_scheduled_transfers_count_or_until')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_scheduled_transfers_user_id_users')),
        sa.ForeignKeyConstraint(['from_wallet_id'], ['wallets.id'],
                                name=op.f('fk_scheduled_transfers_from_wallet_id_wallets')),
        sa.ForeignKeyConstraint(['to_wallet_id'], ['wallets.id'],
                                name=op.f('fk_scheduled_transfers_to_wallet_id_wallets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduled_transfers')),
    )
    op.create_index('ix_scheduled_transfers_user_created', 'scheduled_transfers', ['user_id', 'created_at', 'id'])
    op.create_index('ix_scheduled_transfers_due', 'scheduled_transfers', ['next_run_at'],
                    postgresql_where=sa.text("status = 'ACTIVE'"))
    op.create_table(
        'scheduled_occurrences',
        sa.Column('schedule_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('occurrence', sa.Integer(), nullable=False),
        sa.Column('occurs_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('transaction_id', postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('failure_code', sa.String(length=64), nullable=True),
        sa.Column('failure_reason', sa.String(length=255), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("status IN ('COMPLETED', 'FAILED')", name=op.f('ck_scheduled_occurrences_status')),
        sa.ForeignKeyConstraint(['schedule_id'], ['scheduled_transfers.id'],
                                name=op.f('fk_scheduled_occurrences_schedule_id_scheduled_transfers')),
        sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'],
                                name=op.f('fk_scheduled_occurrences_transaction_id_transactions')),
        sa.PrimaryKeyConstraint('schedule_id', 'occurrence', name=op.f('pk_scheduled_occurrences')),
    )


def downgrade() -> None:
    op.drop_table('scheduled_occurrences')
    op.drop_index('ix_scheduled_transfers_due', table_name='scheduled_transfers')
    op.drop_index('ix_scheduled_transfers_user_created', table_name='scheduled_transfers')
    op.drop_table('scheduled_transfers')
