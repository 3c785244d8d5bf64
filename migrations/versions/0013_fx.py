"""fx: exchange rates and their history, quotes, FX accounts per currency, and FX columns on transactions

Revision ID: 0013_fx
Revises: 0012_reversals
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0013_fx'
down_revision = '0012_reversals'
branch_labels = None
depends_on = None

OLD_ACTIONS = "action IN ('freeze', 'unfreeze', 'activate', 'deactivate', 'credit', 'reverse')"
NEW_ACTIONS = "action IN ('freeze', 'unfreeze', 'activate', 'deactivate', 'credit', 'reverse', 'fx_rate')"


def _rate(name):
    return sa.Column(name, sa.Numeric(24, 10), nullable=False)


def _spread():
    return sa.Column('spread', sa.Numeric(7, 6), server_default='0', nullable=False)


def upgrade() -> None:
    op.create_table(
        'fx_rates',
        sa.Column('base', sa.String(length=3), nullable=False),
        sa.Column('quote', sa.String(length=3), nullable=False),
        _rate('rate'),
        _spread(),
        sa.Column('updated_by', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('rate > 0', name=op.f('ck_fx_rates_rate_positive')),
        sa.CheckConstraint('spread >= 0 AND spread <= 0.1', name=op.f('ck_fx_rates_spread_range')),
        sa.CheckConstraint('base <> quote', name=op.f('ck_fx_rates_distinct_currencies')),
        sa.ForeignKeyConstraint(['updated_by'], ['users.id'], name=op.f('fk_fx_rates_updated_by_users')),
        sa.PrimaryKeyConstraint('base', 'quote', name=op.f('pk_fx_rates')),
    )
    op.create_table(
        'fx_rate_changes',
        sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('base', sa.String(length=3), nullable=False),
        sa.Column('quote', sa.String(length=3), nullable=False),
        _rate('rate'),
        _spread(),
        sa.Column('set_by', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['set_by'], ['users.id'], name=op.f('fk_fx_rate_changes_set_by_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_fx_rate_changes')),
    )
    op.create_index('ix_fx_rate_changes_pair_created_at', 'fx_rate_changes', ['base', 'quote', 'created_at', 'id'])
    op.execute("""
        CREATE TRIGGER fx_rate_changes_append_only BEFORE UPDATE OR DELETE ON fx_rate_changes
            FOR EACH ROW EXECUTE FUNCTION append_only();
        CREATE TRIGGER fx_rate_changes_no_truncate BEFORE TRUNCATE ON fx_rate_changes
            FOR EACH STATEMENT EXECUTE FUNCTION append_only();
    """)
    op.create_table(
        'fx_quotes',
        sa.Column('id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('user_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('from_wallet_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('to_wallet_id', postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column('source_currency', sa.String(length=3), nullable=False),
        sa.Column('destination_currency', sa.String(length=3), nullable=False),
        _rate('market_rate'),
        _spread(),
        _rate('rate'),
        sa.Column('source_amount', sa.BigInteger(), nullable=False),
        sa.Column('destination_amount', sa.BigInteger(), nullable=False),
        sa.Column('fixed', sa.String(length=16), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('source_amount > 0 AND destination_amount > 0', name=op.f('ck_fx_quotes_amounts_positive')),
        sa.CheckConstraint('source_currency <> destination_currency', name=op.f('ck_fx_quotes_distinct_currencies')),
        sa.CheckConstraint("fixed IN ('source', 'destination')", name=op.f('ck_fx_quotes_fixed')),
        sa.CheckConstraint('rate > 0 AND market_rate > 0', name=op.f('ck_fx_quotes_rates_positive')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_fx_quotes_user_id_users')),
        sa.ForeignKeyConstraint(['from_wallet_id'], ['wallets.id'], name=op.f('fk_fx_quotes_from_wallet_id_wallets')),
        sa.ForeignKeyConstraint(['to_wallet_id'], ['wallets.id'], name=op.f('fk_fx_quotes_to_wallet_id_wallets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_fx_quotes')),
    )
    op.create_index(op.f('ix_fx_quotes_user_id'), 'fx_quotes', ['user_id'], unique=False)

    # FX accounts: system wallets that keep a balance, which may go negative (the house's position).
    op.add_column('wallets', sa.Column('is_fx', sa.Boolean(), server_default='false', nullable=False))
    op.drop_constraint(op.f('ck_wallets_balance_not_negative'), 'wallets', type_='check')
    op.create_check_constraint(op.f('ck_wallets_balance_not_negative'), 'wallets', 'balance >= 0 OR is_fx')
    op.drop_constraint(op.f('ck_wallets_held_within_balance'), 'wallets', type_='check')
    op.create_check_constraint(
        op.f('ck_wallets_held_within_balance'), 'wallets', 'held >= 0 AND (held <= balance OR is_fx)'
    )
    op.create_check_constraint(op.f('ck_wallets_fx_is_system'), 'wallets', 'NOT is_fx OR (is_system AND held = 0)')
    op.drop_index('uq_wallets_system_currency', table_name='wallets', postgresql_where=sa.text('is_system'))
    op.create_index('uq_wallets_system_currency', 'wallets', ['currency'], unique=True,
                    postgresql_where=sa.text('is_system AND NOT is_fx'))
    op.create_index('uq_wallets_fx_currency', 'wallets', ['currency'], unique=True, postgresql_where=sa.text('is_fx'))

    op.add_column('transactions', sa.Column('fx_quote_id', postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column('transactions', sa.Column('fx_rate', sa.Numeric(24, 10), nullable=True))
    op.add_column('transactions', sa.Column('destination_amount', sa.BigInteger(), nullable=True))
    op.add_column('transactions', sa.Column('destination_currency', sa.String(length=3), nullable=True))
    op.create_foreign_key(op.f('fk_transactions_fx_quote_id_fx_quotes'), 'transactions', 'fx_quotes',
                          ['fx_quote_id'], ['id'])
    op.create_unique_constraint(op.f('uq_transactions_fx_quote_id'), 'transactions', ['fx_quote_id'])
    op.create_check_constraint(
        op.f('ck_transactions_fx_complete'), 'transactions',
        '(fx_quote_id IS NULL) = (fx_rate IS NULL) AND (fx_quote_id IS NULL) = (destination_amount IS NULL) '
        'AND (fx_quote_id IS NULL) = (destination_currency IS NULL)',
    )

    op.drop_constraint(op.f('ck_admin_actions_action'), 'admin_actions', type_='check')
    op.create_check_constraint(op.f('ck_admin_actions_action'), 'admin_actions', NEW_ACTIONS)


def downgrade() -> None:
    op.drop_constraint(op.f('ck_admin_actions_action'), 'admin_actions', type_='check')
    op.create_check_constraint(op.f('ck_admin_actions_action'), 'admin_actions', OLD_ACTIONS)

    op.drop_constraint(op.f('ck_transactions_fx_complete'), 'transactions', type_='check')
    op.drop_constraint(op.f('uq_transactions_fx_quote_id'), 'transactions', type_='unique')
    op.drop_constraint(op.f('fk_transactions_fx_quote_id_fx_quotes'), 'transactions', type_='foreignkey')
    for column in ('destination_currency', 'destination_amount', 'fx_rate', 'fx_quote_id'):
        op.drop_column('transactions', column)

    op.drop_index('uq_wallets_fx_currency', table_name='wallets', postgresql_where=sa.text('is_fx'))
    op.drop_index('uq_wallets_system_currency', table_name='wallets', postgresql_where=sa.text('is_system AND NOT is_fx'))
    op.create_index('uq_wallets_system_currency', 'wallets', ['currency'], unique=True,
                    postgresql_where=sa.text('is_system'))
    op.drop_constraint(op.f('ck_wallets_fx_is_system'), 'wallets', type_='check')
    op.drop_constraint(op.f('ck_wallets_held_within_balance'), 'wallets', type_='check')
    op.create_check_constraint(op.f('ck_wallets_held_within_balance'), 'wallets', 'held >= 0 AND held <= balance')
    op.drop_constraint(op.f('ck_wallets_balance_not_negative'), 'wallets', type_='check')
    op.create_check_constraint(op.f('ck_wallets_balance_not_negative'), 'wallets', 'balance >= 0')
    # An FX account's entries stay in the ledger; the downgraded schema sees it as an ordinary system account
    # (only possible when no currency has both).
    op.drop_column('wallets', 'is_fx')

    op.drop_index(op.f('ix_fx_quotes_user_id'), table_name='fx_quotes')
    op.drop_table('fx_quotes')
    op.drop_index('ix_fx_rate_changes_pair_created_at', table_name='fx_rate_changes')
    op.drop_table('fx_rate_changes')
    op.drop_table('fx_rates')
