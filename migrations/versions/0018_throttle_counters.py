"""throttle counters: login throttling's counts in PostgreSQL while Redis does not answer

Revision ID: 0018_throttle_counters
Revises: 0017_two_factor
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_throttle_counters"
down_revision = "0017_two_factor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "throttle_counters",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_throttle_counters")),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("throttle_counters")
