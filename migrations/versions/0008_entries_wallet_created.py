"""entries: an index on (wallet_id, created_at) for a wallet's statement over a period

Revision ID: 0008_entries_wallet_created
Revises: 0007_user_identities
"""

from alembic import op

revision = '0008_entries_wallet_created'
down_revision = '0007_user_identities'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_entries_wallet_id_created_at', 'entries', ['wallet_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_entries_wallet_id_created_at', table_name='entries')
