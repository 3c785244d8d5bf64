"""user identities: Google sign-in accounts linked to ours; accounts made by it have no password yet

Revision ID: 0007_user_identities
Revises: 0006_api_keys
"""

import sqlalchemy as sa
from alembic import op

revision = '0007_user_identities'
down_revision = '0006_api_keys'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_identities',
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_identities_user_id_users')),
    sa.PrimaryKeyConstraint('provider', 'subject', name=op.f('pk_user_identities')),
    sa.UniqueConstraint('user_id', 'provider', name=op.f('uq_user_identities_user_id_provider'))
    )
    op.alter_column('users', 'password_hash', existing_type=sa.String(length=60), nullable=True)


def downgrade() -> None:
    # Refused while an account has no password: it could not sign in any more.
    op.alter_column('users', 'password_hash', existing_type=sa.String(length=60), nullable=False)
    op.drop_table('user_identities')
