"""Catalog tables (SQLAlchemy 2 declarative). Migrations in ``migrations/``
create them; a model change needs a new migration, never an edited one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class PolicyVersion(Base):
    """Every policy ever applied; the newest is in force."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_by: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1000))
    text: Mapped[str] = mapped_column(Text)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditEvent(Base):
    """One state-changing action; ``hash`` chains it to the event before."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Job(Base):
    """One scheduled run: a backup, a copy after it, or a vault's daily retention.

    ``key`` names the run (kind, rule, resource, vault, time) so that every
    server enqueuing the same due run inserts one row; ``state`` moves from
    pending to running (claimed under a row lock) to a final state.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_series_time", "series", "scheduled_for"),
        Index("ix_jobs_state_time", "state", "not_before"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(600), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    series: Mapped[str] = mapped_column(String(500))
    plan: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str | None] = mapped_column(String(128))
    tenant: Mapped[str | None] = mapped_column(String(100))
    tier: Mapped[str | None] = mapped_column(String(100))
    vault: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(100))
    scheduled_for: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    start_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finish_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class PointRecord(Base):
    """A recovery point as the catalog knows it; the vault remains the truth."""

    __tablename__ = "points"
    __table_args__ = (UniqueConstraint("vault_id", "point"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vault: Mapped[str] = mapped_column(String(1000))
    vault_id: Mapped[str] = mapped_column(String(64))
    point: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    origin: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    retain_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    forgotten_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DrillRecord(Base):
    """A drill or runbook run: its outcome in columns, its whole document in JSON."""

    __tablename__ = "drills"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    scenario: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str | None] = mapped_column(String(100))
    tier: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    passed: Mapped[bool] = mapped_column(Boolean)
    rto_s: Mapped[float | None] = mapped_column(Float)
    rpo_s: Mapped[float | None] = mapped_column(Float)
    rto_target_s: Mapped[float | None] = mapped_column(Float)
    rpo_target_s: Mapped[float | None] = mapped_column(Float)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    report_digest: Mapped[str | None] = mapped_column(String(64))


class DrillResource(Base):
    """One resource's part in a drill: what status and RTO prediction read."""

    __tablename__ = "drill_resources"
    __table_args__ = (Index("ix_drill_resources_resource_time", "resource", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    drill: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    passed: Mapped[bool] = mapped_column(Boolean)
    rto_s: Mapped[float | None] = mapped_column(Float)
    rpo_s: Mapped[float | None] = mapped_column(Float)
    # None when the resource was not recovered (the drill failed before).
    restore_s: Mapped[float | None] = mapped_column(Float)
    bytes_read: Mapped[int | None] = mapped_column(BigInteger)
