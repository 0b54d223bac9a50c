"""Drills and runbook runs, and each resource's part in them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "drills",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(100)),
        sa.Column("tier", sa.String(100)),
        sa.Column("started_at", when, nullable=False),
        sa.Column("finished_at", when),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("rto_s", sa.Float),
        sa.Column("rpo_s", sa.Float),
        sa.Column("rto_target_s", sa.Float),
        sa.Column("rpo_target_s", sa.Float),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("report_digest", sa.String(64)),
    )
    op.create_index("ix_drills_started_at", "drills", ["started_at"])
    op.create_table(
        "drill_resources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("drill", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("started_at", when, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("rto_s", sa.Float),
        sa.Column("rpo_s", sa.Float),
        sa.Column("restore_s", sa.Float),
        sa.Column("bytes_read", sa.BigInteger),
    )
    op.create_index("ix_drill_resources_drill", "drill_resources", ["drill"])
    op.create_index(
        "ix_drill_resources_resource_time", "drill_resources", ["resource", "started_at"]
    )


def downgrade() -> None:
    op.drop_table("drill_resources")
    op.drop_table("drills")
