"""reversals: REVERSAL transactions linked to the original they reverse, and what of it was reversed

Revision ID: 0012_reversals
Revises: 0011_holds
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012_reversals'
down_revision = '0011_holds'
branch_labels = None
depends_on = None

# A finished transaction row never changes again, except that a COMPLETED one's reversed_amount may grow (in the
# commit of a reversal, wallet/operations/reversals.py); the CHECK keeps it within the amount.
FINAL_WITH_REVERSALS = """
    CREATE OR REPLACE FUNCTION ledger_final_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        unchanged transactions;
    BEGIN
        IF OLD.status <> 'PENDING' THEN
            unchanged := NEW;
            unchanged.reversed_amount := OLD.reversed_amount;
            IF OLD.status <> 'COMPLETED' OR unchanged IS DISTINCT FROM OLD
                    OR NEW.reversed_amount < OLD.reversed_amount THEN
                RAISE EXCEPTION 'transaction % is % and cannot change', OLD.id, OLD.status;
            END IF;
        END IF;
        RETURN NEW;
    END $$;
"""
FINAL = """
    CREATE OR REPLACE FUNCTION ledger_final_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.status <> 'PENDING' THEN
            RAISE EXCEPTION 'transaction % is % and cannot change', OLD.id, OLD.status;
        END IF;
        RETURN NEW;
    END $$;
"""


def upgrade() -> None:
    op.drop_constraint(op.f('ck_transactions_type'), 'transactions', type_='check')
    op.create_check_constraint(
        op.f('ck_transactions_type'), 'transactions', "type IN ('DEPOSIT', 'WITHDRAWAL', 'TRANSFER', 'REVERSAL')"
    )
    op.add_column('transactions', sa.Column('reverses', postgresql.UUID(as_uuid=True), nullable=True))
    op.create_foreign_key(op.f('fk_transactions_reverses_transactions'), 'transactions', 'transactions',
                          ['reverses'], ['id'])
    op.create_index('ix_transactions_reverses', 'transactions', ['reverses'], unique=False)
    op.add_column('transactions', sa.Column('reversed_amount', sa.BigInteger(), server_default='0', nullable=False))
    op.create_check_constraint(op.f('ck_transactions_reversed_within_amount'), 'transactions',
                               'reversed_amount >= 0 AND reversed_amount <= amount')
    op.execute(FINAL_WITH_REVERSALS)
    op.drop_constraint(op.f('ck_admin_actions_action'), 'admin_actions', type_='check')
    op.create_check_constraint(op.f('ck_admin_actions_action'), 'admin_actions',
                               "action IN ('freeze', 'unfreeze', 'activate', 'deactivate', 'credit', 'reverse')")


def downgrade() -> None:
    op.drop_constraint(op.f('ck_admin_actions_action'), 'admin_actions', type_='check')
    op.create_check_constraint(op.f('ck_admin_actions_action'), 'admin_actions',
                               "action IN ('freeze', 'unfreeze', 'activate', 'deactivate', 'credit')")
    op.execute(FINAL)
    op.drop_constraint(op.f('ck_transactions_reversed_within_amount'), 'transactions', type_='check')
    op.drop_column('transactions', 'reversed_amount')
    op.drop_index('ix_transactions_reverses', table_name='transactions')
    op.drop_constraint(op.f('fk_transactions_reverses_transactions'), 'transactions', type_='foreignkey')
    op.drop_column('transactions', 'reverses')
    op.drop_constraint(op.f('ck_transactions_type'), 'transactions', type_='check')
    op.create_check_constraint(
        op.f('ck_transactions_type'), 'transactions', "type IN ('DEPOSIT', 'WITHDRAWAL', 'TRANSFER')"
    )
