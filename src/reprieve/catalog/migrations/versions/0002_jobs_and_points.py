"""Scheduled jobs and the catalog of recovery points.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(600), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("series", sa.String(500), nullable=False),
        sa.Column("plan", sa.String(100), nullable=False),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("resource", sa.String(128)),
        sa.Column("tenant", sa.String(100)),
        sa.Column("tier", sa.String(100)),
        sa.Column("vault", sa.String(100), nullable=False),
        sa.Column("target", sa.String(100)),
        sa.Column("scheduled_for", when, nullable=False),
        sa.Column("start_by", when, nullable=False),
        sa.Column("finish_by", when, nullable=False),
        sa.Column("not_before", when, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("parent_id", sa.Integer),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("heartbeat_at", when),
        sa.Column("started_at", when),
        sa.Column("finished_at", when),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("result", sa.JSON),
    )
    op.create_index("ix_jobs_series_time", "jobs", ["series", "scheduled_for"])
    op.create_index("ix_jobs_state_time", "jobs", ["state", "not_before"])
    op.create_table(
        "points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("vault", sa.String(1000), nullable=False),
        sa.Column("vault_id", sa.String(64), nullable=False),
        sa.Column("point", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("time", when, nullable=False),
        sa.Column("origin", sa.String(200)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("retain_until", when),
        sa.Column("recorded_at", when, nullable=False),
        sa.Column("forgotten_at", when),
        sa.UniqueConstraint("vault_id", "point"),
    )
    op.create_index("ix_points_resource", "points", ["resource"])


def downgrade() -> None:
    op.drop_table("points")
    op.drop_table("jobs")
