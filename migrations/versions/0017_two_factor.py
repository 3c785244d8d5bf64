"""two factor: TOTP second factors with recovery codes; sessions say when and how they last authenticated, and what
their owner sees of them (user agent, address, last use)

Revision ID: 0017_two_factor
Revises: 0016_pending_list
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017_two_factor"
down_revision = "0016_pending_list"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "two_factor",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column(
            "recovery_hashes", postgresql.ARRAY(sa.String(length=64)), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_two_factor_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_two_factor")),
    )
    op.add_column(
        "sessions",
        sa.Column("authenticated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.add_column(
        "sessions",
        sa.Column("amr", postgresql.ARRAY(sa.String(length=16)), server_default=sa.text("'{}'"), nullable=False),
    )
    op.add_column("sessions", sa.Column("user_agent", sa.String(length=255), nullable=True))
    op.add_column("sessions", sa.Column("ip", sa.String(length=64), nullable=True))
    op.add_column(
        "sessions",
        sa.Column("last_used_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    # The logins there were authenticated when they began, and were last seen then as far as anyone knows.
    op.execute("UPDATE sessions SET authenticated_at = created_at, last_used_at = created_at")


def downgrade() -> None:
    for column in ("last_used_at", "ip", "user_agent", "amr", "authenticated_at"):
        op.drop_column("sessions", column)
    op.drop_table("two_factor")
