"""The job queue in the catalog: enqueue due runs, claim them, finish them.

Every server enqueues the same due runs; the unique ``key`` makes that one
row. Claiming reads pending rows ``FOR UPDATE SKIP LOCKED`` (PostgreSQL)
and moves them to running inside that transaction, so two servers never
claim one job; on SQLite the conditional update does the same for the
single writer SQLite allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from reprieve.catalog.db import as_utc
from reprieve.catalog.models import Job
from reprieve.errors import NotFoundError, StorageError, UsageError
from reprieve.policy.model import Policy
from reprieve.scheduler.plan import BACKUP, COPY, RETENTION, Series, Slot, find_rule, series

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
MISSED = "missed"
CANCELLED = "cancelled"
FINAL = (SUCCEEDED, FAILED, MISSED, CANCELLED)

MAX_ATTEMPTS = 3
BACKOFF = timedelta(seconds=30)  # doubled after each failed attempt
# A running job whose server has not beaten its heart for this long is
# taken back: the server died or lost the catalog.
STALE_AFTER = timedelta(minutes=2)
# How far back a server that was down looks for runs it must record.
LOOKBACK = timedelta(days=7)
# Pending jobs looked at per claim, oldest first: enough that jobs blocked
# by a limit (copies to a DR region that is down) do not hide the others.
CANDIDATES = 500
CLAIM_LOCK = 0x7265_7072  # "repr": the advisory lock claims serialise on


class LostJob(StorageError):
    """A job this server ran was taken back by another before it ended."""


@dataclass(frozen=True)
class Limits:
    jobs: int = 4
    per_vault: int = 2
    per_resource: int = 1


@dataclass(frozen=True)
class JobView:
    """A job's fields, detached from its session (handed to worker threads)."""

    id: int
    kind: str
    plan: str
    rule: str
    resource: str | None
    tenant: str | None
    tier: str | None
    vault: str
    target: str | None
    scheduled_for: datetime
    start_by: datetime
    finish_by: datetime
    state: str
    attempts: int
    parent_id: int | None
    claimed_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    result: dict[str, Any] | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        def when(t: datetime | None) -> datetime | None:
            return as_utc(t) if t is not None else None

        return cls(
            id=job.id,
            kind=job.kind,
            plan=job.plan,
            rule=job.rule,
            resource=job.resource,
            tenant=job.tenant,
            tier=job.tier,
            vault=job.vault,
            target=job.target,
            scheduled_for=as_utc(job.scheduled_for),
            start_by=as_utc(job.start_by),
            finish_by=as_utc(job.finish_by),
            state=job.state,
            attempts=job.attempts,
            parent_id=job.parent_id,
            claimed_by=job.claimed_by,
            started_at=when(job.started_at),
            finished_at=when(job.finished_at),
            error=job.error,
            result=job.result,
        )

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat(timespec="seconds").replace("+00:00", "Z") if t else None

        return {
            "id": self.id,
            "kind": self.kind,
            "plan": self.plan,
            "rule": self.rule,
            "resource": self.resource,
            "tenant": self.tenant,
            "tier": self.tier,
            "vault": self.vault,
            "target": self.target,
            "scheduled_for": iso(self.scheduled_for),
            "start_by": iso(self.start_by),
            "finish_by": iso(self.finish_by),
            "state": self.state,
            "attempts": self.attempts,
            "parent": self.parent_id,
            "server": self.claimed_by,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "error": self.error,
            "result": self.result,
        }


def _row(slot: Slot, now: datetime) -> dict[str, Any]:
    s = slot.series
    late = now >= slot.start_by
    return {
        "key": slot.key,
        "kind": s.kind,
        "series": s.name,
        "plan": s.plan,
        "rule": s.rule,
        "resource": s.resource,
        "tenant": s.tenant,
        "tier": s.tier,
        "vault": s.vault,
        "target": s.target,
        "scheduled_for": slot.at,
        "start_by": slot.start_by,
        "finish_by": slot.finish_by,
        "not_before": slot.at,
        "state": MISSED if late else PENDING,
        "attempts": 0,
        "cancel_requested": False,
        "finished_at": now if late else None,
        "error": f"not started by {slot.start_by:%Y-%m-%d %H:%M}Z (no server ran)"
        if late
        else None,
    }


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert rows whose key is not there yet; a racing server's rows win."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        session.execute(dialect.insert(Job).values(chunk).on_conflict_do_nothing())


def enqueue_due(session: Session, policy: Policy, since: datetime, now: datetime) -> int:
    """Add every run due up to ``now`` that is not queued yet.

    Runs that came due while no server ran are added too: those still
    inside their start window as pending (they run late, on start), the
    others as missed. A series new to the catalog starts at ``since``
    (when its policy was applied).
    """
    newest = {
        name: last
        for name, last in session.execute(
            select(Job.series, func.max(Job.scheduled_for)).group_by(Job.series)
        )
    }
    rows: list[dict[str, Any]] = []
    for s in series(policy):
        last = newest.get(s.name)
        after = as_utc(last) if last is not None else since
        for slot in s.slots(max(after, now - LOOKBACK), now):
            rows.append(_row(slot, now))
    _insert_new(session, rows)
    return len(rows)


def expire(session: Session, now: datetime, worker: str) -> None:
    """Record as missed what can no longer start, and as failed what ran out of time."""
    session.execute(
        update(Job)
        .where(Job.state == PENDING, Job.attempts == 0, Job.start_by <= now)
        .values(state=MISSED, finished_at=now, error="could not start inside its start window")
    )
    session.execute(
        update(Job)
        .where(Job.state == PENDING, Job.attempts > 0, Job.finish_by <= now)
        .values(state=FAILED, finished_at=now)
    )
    # Jobs whose server went away: back to the queue while time is left.
    stale = session.scalars(
        select(Job)
        .where(
            Job.state == RUNNING,
            Job.heartbeat_at < now - STALE_AFTER,
            Job.claimed_by != worker,  # our own are alive: we are the one asking
        )
        .with_for_update(skip_locked=True)
    ).all()
    for job in stale:
        job.error = f"server {job.claimed_by} stopped while running it"
        if job.attempts < MAX_ATTEMPTS and as_utc(job.finish_by) > now:
            job.state = PENDING
            job.not_before = now
        else:
            job.state = FAILED
            job.finished_at = now


def claim(session: Session, worker: str, now: datetime, free: int, limits: Limits) -> list[JobView]:
    """Take up to ``free`` due jobs for ``worker`` within the concurrency limits.

    A retention job needs its vaults alone (it prunes under an exclusive
    lock): it is claimed only when nothing runs on them, and nothing else
    is claimed on a vault while one runs.
    """
    if free <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        # One claimer at a time over every server, so the limits hold across
        # them; held only for this short transaction.
        session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
    per_vault: Counter[str] = Counter()
    per_resource: Counter[tuple[str, str]] = Counter()
    alone: set[str] = set()
    for kind, vault, target, resource in session.execute(
        select(Job.kind, Job.vault, Job.target, Job.resource).where(Job.state == RUNNING)
    ):
        for v in _vaults(vault, target):
            per_vault[v] += 1
            if kind == RETENTION:
                alone.add(v)
        if resource:
            per_resource[(resource, kind)] += 1
    candidates = session.scalars(
        select(Job)
        .where(Job.state == PENDING, Job.not_before <= now)
        .order_by(Job.scheduled_for, Job.id)
        .limit(CANDIDATES)
        .with_for_update(skip_locked=True)
    ).all()
    taken: list[JobView] = []
    for job in candidates:
        if len(taken) >= free:
            break
        vaults = _vaults(job.vault, job.target)
        if any(v in alone for v in vaults):
            continue
        if job.kind == RETENTION and any(per_vault[v] for v in vaults):
            continue
        if any(per_vault[v] >= limits.per_vault for v in vaults):
            continue
        if job.resource and per_resource[(job.resource, job.kind)] >= limits.per_resource:
            continue
        moved = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.state == PENDING)
            .values(
                state=RUNNING,
                claimed_by=worker,
                attempts=Job.attempts + 1,
                started_at=now,
                heartbeat_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            continue
        session.refresh(job)
        taken.append(JobView.of(job))
        for v in vaults:
            per_vault[v] += 1
            if job.kind == RETENTION:
                alone.add(v)
        if job.resource:
            per_resource[(job.resource, job.kind)] += 1
    return taken


def _vaults(vault: str, target: str | None) -> tuple[str, ...]:
    return (vault, target) if target else (vault,)


def finish(
    session: Session,
    job: JobView,
    now: datetime,
    policy: Policy | None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    retry: bool = False,
    cancelled: bool = False,
    handed_back: bool = False,
) -> JobView:
    """Record how a run ended; queue its copies after a backup succeeded, or
    its next attempt (with backoff) after a failure worth retrying."""
    row = session.get(Job, job.id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"no job {job.id}; see `reprieve jobs list`")
    if (row.state, row.claimed_by, row.attempts) != (RUNNING, job.claimed_by, job.attempts):
        # Taken back meanwhile (this server was thought dead): the row is no
        # longer this run's to end.
        raise LostJob(f"job {job.id} was taken back while it ran; its outcome is not recorded")
    row.result = result
    row.error = error
    row.finished_at = now
    row.heartbeat_at = now
    if cancelled:
        row.state = CANCELLED
    elif handed_back:
        # Its server stopped it to shut down: not the job's fault, so always again.
        row.state = PENDING
        row.not_before = now
        row.finished_at = None
    elif error is None:
        row.state = SUCCEEDED
        if row.kind == BACKUP and policy is not None:
            _queue_copies(session, row, now, policy)
    else:
        wait = BACKOFF * 2 ** (row.attempts - 1)
        if retry and row.attempts < MAX_ATTEMPTS and now + wait < as_utc(row.finish_by):
            row.state = PENDING
            row.not_before = now + wait
            row.finished_at = None
        else:
            row.state = FAILED
    session.flush()
    return JobView.of(row)


def _queue_copies(session: Session, job: Job, now: datetime, policy: Policy) -> None:
    try:
        rule = find_rule(policy, job.plan, job.rule)
    except UsageError:
        return  # the rule left the policy while its backup ran
    rows = []
    for action in rule.copies:
        copy = Series(
            kind=COPY,
            plan=job.plan,
            rule=job.rule,
            vault=job.vault,
            schedule="",
            start_window=rule.completion_window,
            completion_window=2 * rule.completion_window,
            resource=job.resource,
            tenant=job.tenant,
            tier=job.tier,
            target=action.vault,
        )
        slot = Slot(copy, now)
        row = _row(slot, now)
        row.update(key=f"{copy.name}->{action.vault}:job{job.id}", parent_id=job.id)
        row["series"] = f"{copy.name}->{action.vault}"
        rows.append(row)
    _insert_new(session, rows)


CANCELLED_BY_REQUEST = "cancelled while running (jobs cancel)"
OVERDUE = "stopped: still running at the end of its completion window"
TAKEN_BACK = "stopped: another server took it back"


def beat(session: Session, job_ids: Iterable[int], now: datetime, worker: str) -> dict[int, str]:
    """Mark ``job_ids`` alive; returns those that must stop, with why (a job
    another server took back meanwhile must stop too)."""
    ids = list(job_ids)
    if not ids:
        return {}
    mine = (Job.id.in_(ids), Job.state == RUNNING, Job.claimed_by == worker)
    session.execute(update(Job).where(*mine).values(heartbeat_at=now))
    still = set(session.scalars(select(Job.id).where(*mine)))
    lost = {job_id: TAKEN_BACK for job_id in ids if job_id not in still}
    stop = select(Job.id, Job.cancel_requested).where(
        Job.id.in_(ids), (Job.cancel_requested.is_(True)) | (Job.finish_by <= now)
    )
    return lost | {
        job_id: CANCELLED_BY_REQUEST if asked else OVERDUE
        for job_id, asked in session.execute(stop)
    }


def cancel(session: Session, job_id: int, now: datetime) -> JobView:
    """Cancel a pending job at once; ask the server running one to stop it."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFoundError(f"no job {job_id}; see `reprieve jobs list`")
    if job.state in FINAL:
        raise UsageError(f"job {job_id} already {job.state}; nothing to cancel")
    job.cancel_requested = True
    if job.state == PENDING:
        job.state = CANCELLED
        job.finished_at = now
        job.error = "cancelled before it started"
    session.flush()
    return JobView.of(job)


def get(session: Session, job_id: int) -> JobView:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}; see `reprieve jobs list`")
    return JobView.of(job)


def listing(session: Session, limit: int | None = 50, state: str | None = None) -> list[JobView]:
    """Newest first by due time."""
    query = select(Job).order_by(Job.scheduled_for.desc(), Job.id.desc())
    if state is not None:
        query = query.where(Job.state == state)
    if limit is not None:
        query = query.limit(limit)
    return [JobView.of(j) for j in session.scalars(query)]


def next_pending(session: Session) -> datetime | None:
    """When the earliest waiting job may start."""
    first = session.scalar(select(func.min(Job.not_before)).where(Job.state == PENDING))
    return as_utc(first) if first is not None else None
