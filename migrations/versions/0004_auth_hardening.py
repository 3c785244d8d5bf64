"""auth hardening: an index for polling revoked sessions

Revision ID: 0004_auth_hardening
Revises: 0003_provider_deposits
"""

import sqlalchemy as sa
from alembic import op

revision = '0004_auth_hardening'
down_revision = '0003_provider_deposits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'ix_sessions_revoked_at', 'sessions', ['revoked_at'], unique=False,
        postgresql_where=sa.text('revoked_at IS NOT NULL'),
    )


def downgrade() -> None:
    op.drop_index('ix_sessions_revoked_at', table_name='sessions')
