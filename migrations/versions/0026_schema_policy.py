"""schema_policy: the oldest release that may serve this schema (a contract migration raises it)

Revision ID: 0026_schema_policy
Revises: 0025_transfer_batches
"""

import sqlalchemy as sa
from alembic import op

revision = "0026_schema_policy"
down_revision = "0025_transfer_batches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_policy",
        sa.Column("id", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column("oldest_code", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_schema_policy_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_policy")),
    )
    # Every migration so far only expanded the schema: the last release before this one (its head 0023_payouts) serves it.
    op.execute("INSERT INTO schema_policy (oldest_code) VALUES ('0023_payouts')")


def downgrade() -> None:
    op.drop_table("schema_policy")
