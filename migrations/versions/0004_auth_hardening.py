"""auth hardening: an index for polling revoked sessions; e-mail addresses unique by their case-folded key

Revision ID: 0004_auth_hardening
Revises: 0003_provider_deposits
"""

import sqlalchemy as sa
from alembic import op

from wallet.identity.identifiers import email_key

revision = '0004_auth_hardening'
down_revision = '0003_provider_deposits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'ix_sessions_revoked_at', 'sessions', ['revoked_at'], unique=False,
        postgresql_where=sa.text('revoked_at IS NOT NULL'),
    )

    # The key is computed in Python (wallet/identity/identifiers.py), the one place that defines it: PostgreSQL's lower()
    # folds case differently (İ, ß) and knows no NFKC. Two existing addresses that share a key stop the migration:
    # an operator decides which account keeps the address.
    op.add_column('users', sa.Column('email_key', sa.String(), nullable=True))
    users = sa.table('users', sa.column('id', sa.UUID()), sa.column('email', sa.String()), sa.column('email_key', sa.String()))
    conn = op.get_bind()
    for row in conn.execute(sa.select(users.c.id, users.c.email).where(users.c.email.is_not(None))).all():
        conn.execute(users.update().where(users.c.id == row.id).values(email_key=email_key(row.email)))
    op.drop_index('uq_users_email_lower', table_name='users')
    op.create_index('uq_users_email_key', 'users', ['email_key'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_users_email_key', table_name='users')
    op.create_index('uq_users_email_lower', 'users', [sa.literal_column('lower(email)')], unique=True)
    op.drop_column('users', 'email_key')
    op.drop_index('ix_sessions_revoked_at', table_name='sessions')
