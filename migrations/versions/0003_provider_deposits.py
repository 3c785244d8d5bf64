"""provider deposits: provider, provider_reference and authorization_url on transactions

Revision ID: 0003_provider_deposits
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003_provider_deposits'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('transactions', sa.Column('provider', sa.String(length=16), nullable=True))
    op.add_column('transactions', sa.Column('provider_reference', sa.String(length=64), nullable=True))
    op.add_column('transactions', sa.Column('authorization_url', sa.String(length=1024), nullable=True))
    op.create_check_constraint(
        op.f('ck_transactions_provider_reference'), 'transactions', '(provider IS NULL) = (provider_reference IS NULL)'
    )
    op.create_index(
        'uq_transactions_provider_reference', 'transactions', ['provider', 'provider_reference'], unique=True
    )


def downgrade() -> None:
    op.drop_index('uq_transactions_provider_reference', table_name='transactions')
    op.drop_constraint(op.f('ck_transactions_provider_reference'), 'transactions', type_='check')
    op.drop_column('transactions', 'authorization_url')
    op.drop_column('transactions', 'provider_reference')
    op.drop_column('transactions', 'provider')
