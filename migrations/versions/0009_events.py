"""events: the outbox and the per-user lock rows that order it

Revision ID: 0009_events
Revises: 0008_entries_wallet_created
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009_events'
down_revision = '0008_entries_wallet_created'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_events_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    op.create_index('ix_events_user_id_id', 'events', ['user_id', 'id'], unique=False)
    op.create_table('event_heads',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_event_heads_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_event_heads'))
    )


def downgrade() -> None:
    op.drop_table('event_heads')
    op.drop_index('ix_events_user_id_id', table_name='events')
    op.drop_table('events')
