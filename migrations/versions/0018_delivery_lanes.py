"""delivery lanes: per-endpoint circuit breaker, in-flight leases counted per endpoint and user, and indexes for the
webhook lane (per endpoint), the e-mail lane (due order) and the outbox-backlog gauge

Revision ID: 0018_delivery_lanes
Revises: 0017_two_factor
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_delivery_lanes"
down_revision = "0017_two_factor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "webhook_endpoints", sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("webhook_endpoints", sa.Column("breaker_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("deliveries", sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_deliveries_due", table_name="deliveries", postgresql_where=sa.text("status = 'pending'"))
    op.create_index(
        "ix_deliveries_endpoint_due",
        "deliveries",
        ["endpoint_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending' AND channel = 'webhook'"),
    )
    op.create_index(
        "ix_deliveries_email_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending' AND channel = 'email'"),
    )
    op.create_index(
        "ix_deliveries_pending_created_at",
        "deliveries",
        ["channel", "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_deliveries_in_flight", "deliveries", ["endpoint_id"], postgresql_where=sa.text("leased_until IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_in_flight", table_name="deliveries")
    op.drop_index("ix_deliveries_pending_created_at", table_name="deliveries")
    op.drop_index("ix_deliveries_email_due", table_name="deliveries")
    op.drop_index("ix_deliveries_endpoint_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_column("deliveries", "leased_until")
    op.drop_column("webhook_endpoints", "breaker_until")
    op.drop_column("webhook_endpoints", "consecutive_failures")
