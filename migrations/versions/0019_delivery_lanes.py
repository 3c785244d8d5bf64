"""delivery lanes: per-endpoint circuit breaker, in-flight leases counted per endpoint and user, and indexes for the
webhook lane (per endpoint), the e-mail lane (due order) and the outbox-backlog gauge

Revision ID: 0019_delivery_lanes
Revises: 0018_throttle_counters

deliveries is one of the big tables: its indexes are built and dropped CONCURRENTLY (docs/operations.md, migration
policy), outside the migration's transaction.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_delivery_lanes"
down_revision = "0018_throttle_counters"
branch_labels = None
depends_on = None

# The webhook lane's claim (per endpoint, in due order), the e-mail lane's (due order), the backlog gauge's, and the
# leases in force (what the caps count).
INDEXES = (
    ("ix_deliveries_endpoint_due", ["endpoint_id", "next_attempt_at"], "status = 'pending' AND channel = 'webhook'"),
    ("ix_deliveries_email_due", ["next_attempt_at"], "status = 'pending' AND channel = 'email'"),
    ("ix_deliveries_pending_created_at", ["channel", "created_at"], "status = 'pending'"),
    ("ix_deliveries_in_flight", ["endpoint_id"], "leased_until IS NOT NULL"),
)


def upgrade() -> None:
    op.add_column(
        "webhook_endpoints", sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("webhook_endpoints", sa.Column("breaker_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("deliveries", sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True))
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_deliveries_due",
            table_name="deliveries",
            postgresql_where=sa.text("status = 'pending'"),
            postgresql_concurrently=True,
        )
        for name, columns, where in INDEXES:
            op.create_index(name, "deliveries", columns, postgresql_where=sa.text(where), postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _, _ in reversed(INDEXES):
            op.drop_index(name, table_name="deliveries", postgresql_concurrently=True)
        op.create_index(
            "ix_deliveries_due",
            "deliveries",
            ["next_attempt_at"],
            postgresql_where=sa.text("status = 'pending'"),
            postgresql_concurrently=True,
        )
    op.drop_column("deliveries", "leased_until")
    op.drop_column("webhook_endpoints", "breaker_until")
    op.drop_column("webhook_endpoints", "consecutive_failures")
