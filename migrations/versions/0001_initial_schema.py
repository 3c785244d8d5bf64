"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 07:18:54.371699
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('phone', sa.String(length=16), nullable=True),
    sa.Column('password_hash', sa.String(length=60), nullable=False),
    sa.Column('role', sa.String(length=16), server_default='user', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role IN ('user', 'admin')", name=op.f('ck_users_role')),
    sa.CheckConstraint("status IN ('active', 'frozen', 'inactive')", name=op.f('ck_users_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
    )
    op.create_index('uq_users_email_lower', 'users', [sa.literal_column('lower(email)')], unique=True)
    op.create_index('uq_users_phone', 'users', ['phone'], unique=True)
    op.create_index('uq_users_username_lower', 'users', [sa.literal_column('lower(username)')], unique=True)
    op.create_table('daily_usage',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_daily_usage_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'currency', 'kind', 'day', name=op.f('pk_daily_usage'))
    )
    op.create_table('sessions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('refresh_jti', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    op.create_index(op.f('ix_sessions_user_id'), 'sessions', ['user_id'], unique=False)
    op.create_table('wallets',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('number', sa.String(length=10), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=True),
    sa.Column('name', sa.String(length=64), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('balance', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('is_system', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("number ~ '^[0-9]{10}$'", name=op.f('ck_wallets_number_digits')),
    sa.CheckConstraint('balance >= 0', name=op.f('ck_wallets_balance_not_negative')),
    sa.CheckConstraint('is_system = (user_id IS NULL)', name=op.f('ck_wallets_system_has_no_owner')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_wallets_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wallets')),
    sa.UniqueConstraint('number', name=op.f('uq_wallets_number'))
    )
    op.create_index(op.f('ix_wallets_user_id'), 'wallets', ['user_id'], unique=False)
    op.create_index('uq_wallets_system_currency', 'wallets', ['currency'], unique=True, postgresql_where=sa.text('is_system'))
    op.create_table('transactions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('seq', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('reference', sa.String(length=24), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='PENDING', nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('source_wallet_id', sa.UUID(), nullable=True),
    sa.Column('destination_wallet_id', sa.UUID(), nullable=True),
    sa.Column('source_user_id', sa.UUID(), nullable=True),
    sa.Column('destination_user_id', sa.UUID(), nullable=True),
    sa.Column('initiator_id', sa.UUID(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=True),
    sa.Column('failure_code', sa.String(length=64), nullable=True),
    sa.Column('failure_reason', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('PENDING', 'COMPLETED', 'FAILED')", name=op.f('ck_transactions_status')),
    sa.CheckConstraint("type IN ('DEPOSIT', 'WITHDRAWAL', 'TRANSFER')", name=op.f('ck_transactions_type')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_transactions_amount_positive')),
    sa.ForeignKeyConstraint(['destination_user_id'], ['users.id'], name=op.f('fk_transactions_destination_user_id_users')),
    sa.ForeignKeyConstraint(['destination_wallet_id'], ['wallets.id'], name=op.f('fk_transactions_destination_wallet_id_wallets')),
    sa.ForeignKeyConstraint(['initiator_id'], ['users.id'], name=op.f('fk_transactions_initiator_id_users')),
    sa.ForeignKeyConstraint(['source_user_id'], ['users.id'], name=op.f('fk_transactions_source_user_id_users')),
    sa.ForeignKeyConstraint(['source_wallet_id'], ['wallets.id'], name=op.f('fk_transactions_source_wallet_id_wallets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transactions')),
    sa.UniqueConstraint('reference', name=op.f('uq_transactions_reference')),
    sa.UniqueConstraint('seq', name=op.f('uq_transactions_seq'))
    )
    op.create_index('ix_transactions_destination_user_seq', 'transactions', ['destination_user_id', 'seq'], unique=False)
    op.create_index('ix_transactions_destination_wallet_seq', 'transactions', ['destination_wallet_id', 'seq'], unique=False)
    op.create_index('ix_transactions_pending', 'transactions', ['created_at'], unique=False, postgresql_where=sa.text("status = 'PENDING'"))
    op.create_index('ix_transactions_source_user_seq', 'transactions', ['source_user_id', 'seq'], unique=False)
    op.create_index('ix_transactions_source_wallet_seq', 'transactions', ['source_wallet_id', 'seq'], unique=False)
    op.create_index('uq_transactions_initiator_idempotency_key', 'transactions', ['initiator_id', 'idempotency_key'], unique=True)
    op.create_table('entries',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('transaction_id', sa.UUID(), nullable=False),
    sa.Column('wallet_id', sa.UUID(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('balance_after', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('amount <> 0', name=op.f('ck_entries_amount_not_zero')),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], name=op.f('fk_entries_transaction_id_transactions')),
    sa.ForeignKeyConstraint(['wallet_id'], ['wallets.id'], name=op.f('fk_entries_wallet_id_wallets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_entries'))
    )
    op.create_index(op.f('ix_entries_transaction_id'), 'entries', ['transaction_id'], unique=False)
    op.create_index(op.f('ix_entries_wallet_id'), 'entries', ['wallet_id'], unique=False)

    # The ledger guards itself: entries are append-only and each transaction's entries sum to zero per
    # currency at commit; a finished transaction row never changes again.
    op.execute("""
        CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
        END $$;
        CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
            FOR EACH ROW EXECUTE FUNCTION append_only();
        CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
            FOR EACH STATEMENT EXECUTE FUNCTION append_only();

        CREATE FUNCTION ledger_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM entries WHERE transaction_id = NEW.transaction_id
                       GROUP BY currency HAVING SUM(amount) <> 0) THEN
                RAISE EXCEPTION 'entries of transaction % do not sum to zero', NEW.transaction_id;
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entries_balanced();

        CREATE FUNCTION ledger_final_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.status <> 'PENDING' THEN
                RAISE EXCEPTION 'transaction % is % and cannot change', OLD.id, OLD.status;
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER transactions_final BEFORE UPDATE ON transactions
            FOR EACH ROW EXECUTE FUNCTION ledger_final_transaction();
    """)


def downgrade() -> None:
    op.execute("""
        DROP TRIGGER transactions_final ON transactions;
        DROP FUNCTION ledger_final_transaction();
        DROP TRIGGER entries_balanced ON entries;
        DROP FUNCTION ledger_entries_balanced();
        DROP TRIGGER entries_no_truncate ON entries;
        DROP TRIGGER entries_append_only ON entries;
        DROP FUNCTION append_only();
    """)
    op.drop_index(op.f('ix_entries_wallet_id'), table_name='entries')
    op.drop_index(op.f('ix_entries_transaction_id'), table_name='entries')
    op.drop_table('entries')
    op.drop_index('uq_transactions_initiator_idempotency_key', table_name='transactions')
    op.drop_index('ix_transactions_source_wallet_seq', table_name='transactions')
    op.drop_index('ix_transactions_source_user_seq', table_name='transactions')
    op.drop_index('ix_transactions_pending', table_name='transactions', postgresql_where=sa.text("status = 'PENDING'"))
    op.drop_index('ix_transactions_destination_wallet_seq', table_name='transactions')
    op.drop_index('ix_transactions_destination_user_seq', table_name='transactions')
    op.drop_table('transactions')
    op.drop_index('uq_wallets_system_currency', table_name='wallets', postgresql_where=sa.text('is_system'))
    op.drop_index(op.f('ix_wallets_user_id'), table_name='wallets')
    op.drop_table('wallets')
    op.drop_index(op.f('ix_sessions_user_id'), table_name='sessions')
    op.drop_table('sessions')
    op.drop_table('daily_usage')
    op.drop_index('uq_users_username_lower', table_name='users')
    op.drop_index('uq_users_phone', table_name='users')
    op.drop_index('uq_users_email_lower', table_name='users')
    op.drop_table('users')
