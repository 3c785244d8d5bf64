"""api keys: scoped credentials for services, and the key that initiated a transaction

Revision ID: 0006_api_keys
Revises: 0005_claimed_at
"""

import sqlalchemy as sa
from alembic import op

revision = '0006_api_keys'
down_revision = '0005_claimed_at'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=15), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.ARRAY(sa.String(length=16)), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'deposit', 'withdraw', 'transfer']::varchar[]", name=op.f('ck_api_keys_scopes')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_keys_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_index('ix_api_keys_user_id_created_at_id', 'api_keys', ['user_id', 'created_at', 'id'], unique=False)
    op.add_column('transactions', sa.Column('api_key_id', sa.UUID(), nullable=True))
    op.create_foreign_key(op.f('fk_transactions_api_key_id_api_keys'), 'transactions', 'api_keys', ['api_key_id'], ['id'])


def downgrade() -> None:
    op.drop_constraint(op.f('fk_transactions_api_key_id_api_keys'), 'transactions', type_='foreignkey')
    op.drop_column('transactions', 'api_key_id')
    op.drop_index('ix_api_keys_user_id_created_at_id', table_name='api_keys')
    op.drop_table('api_keys')
