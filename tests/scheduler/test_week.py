"""A simulated week of the scheduler, checked against an independent calculation.

Three tenants, one per tier, back up every 5 minutes, every 15 minutes, and
hourly; the first two copy to a DR vault. The server is down for three hours
on Wednesday, one backup fails once and is retried, another fails every
attempt. Retention runs each midnight. The clock and the executor are the
test's: the executor keeps points in memory and forgets what the real
``expired`` rule says, so what is checked is the scheduler: which jobs
exist, in which state, after how many attempts, and what retention forgot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from reprieve.catalog import policies
from reprieve.catalog.db import Catalog, as_utc, open_catalog
from reprieve.catalog.models import Job
from reprieve.errors import StorageError
from reprieve.policy.loader import parse_policy
from reprieve.policy.model import Policy
from reprieve.scheduler.plan import expired, find_rule, keep_for
from reprieve.scheduler.queue import MAX_ATTEMPTS, JobView
from reprieve.scheduler.runner import Scheduler

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, 00:00 UTC
END = START + timedelta(days=7)
DOWN = datetime(2026, 3, 4, 10, 2, tzinfo=UTC)
BACK = datetime(2026, 3, 4, 13, 6, 30, tzinfo=UTC)
FAILS_ONCE = ("acme-db", datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
FAILS_ALWAYS = ("globex-files", datetime(2026, 3, 5, 12, 0, tzinfo=UTC))

POLICY = """
version: 1
vaults:
  primary: {url: /srv/vaults/primary}
  dr: {url: /srv/vaults/dr}
tiers:
  premium: {rto: 15m, rpo: 5m, architecture: active-active, drills: monthly, plan: premium}
  standard: {rto: 60m, rpo: 15m, architecture: warm-standby, drills: quarterly, plan: standard}
  basic: {rto: 240m, rpo: 60m, architecture: pilot-light, drills: semi-annually, plan: basic}
tenants:
  acme: {tier: premium}
  globex: {tier: standard}
  initech: {tier: basic}
resources:
  acme-db: {kind: files, tenant: acme, paths: [/srv/acme]}
  globex-files: {kind: files, tenant: globex, paths: [/srv/globex]}
  initech-app: {kind: files, tenant: initech, paths: [/srv/initech]}
plans:
  premium:
    rules:
      - {name: often, schedule: "*/5 * * * *", vault: primary, start_window: 2m,
         completion_window: 10m, retention: 1d, copies: [{vault: dr, retention: 2d}]}
  standard:
    rules:
      - {name: quarter, schedule: "*/15 * * * *", vault: primary, start_window: 5m,
         completion_window: 30m, retention: 2d, copies: [{vault: dr, retention: 3d}]}
  basic:
    rules:
      - {name: hourly, schedule: "0 * * * *", vault: primary, start_window: 15m,
         completion_window: 2h, retention: 3d}
"""

# The same schedules, written out again by hand for the independent side.
EVERY = {"acme-db": (5, 2, True), "globex-files": (15, 5, True), "initech-app": (60, 15, False)}
KEEP = {
    ("acme-db", "primary"): timedelta(days=1),
    ("acme-db", "dr"): timedelta(days=2),
    ("globex-files", "primary"): timedelta(days=2),
    ("globex-files", "dr"): timedelta(days=3),
    ("initech-app", "primary"): timedelta(days=3),
}


class SimClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class MemoryExecutor:
    """Jobs done in no simulated time, on points kept in memory."""

    clock: SimClock
    points: dict[tuple[str, str], dict[str, datetime]] = field(default_factory=dict)
    made_by_job: dict[int, str] = field(default_factory=dict)
    # (when, vault, resource, the forgotten point's time)
    forgotten: list[tuple[datetime, str, str, datetime]] = field(default_factory=list)

    def __call__(self, job: JobView, policy: Policy, stop: threading.Event) -> dict[str, Any]:
        now = self.clock()
        if job.kind == "backup":
            assert job.resource is not None
            key = (job.resource, job.scheduled_for)
            if key == FAILS_ALWAYS or (key == FAILS_ONCE and job.attempts == 1):
                raise StorageError("simulated: the vault did not answer")
            point = f"{job.resource}@{now:%a %H:%M:%S}"
            self.points.setdefault((job.vault, job.resource), {})[point] = now
            self.made_by_job[job.id] = point
            return {"point": point}
        if job.kind == "copy":
            assert job.resource is not None and job.target is not None
            assert job.parent_id is not None
            point = self.made_by_job[job.parent_id]
            made_at = self.points[(job.vault, job.resource)][point]
            self.points.setdefault((job.target, job.resource), {})[point] = made_at
            return {"copied": [point]}
        assert job.kind == "retention"
        keep = keep_for(find_rule(policy, job.plan, job.rule), job.vault)
        gone = []
        for (vault, resource), held in self.points.items():
            if vault != job.vault or resource not in policy.resources:
                continue
            if policy.plans_for(resource) != [job.plan]:
                continue
            for point in expired(held, keep, now):
                self.forgotten.append((now, vault, resource, held.pop(point)))
                gone.append(point)
        return {"forgotten": gone}


def simulate(catalog: Catalog) -> MemoryExecutor:
    clock = SimClock(START - timedelta(minutes=1))
    policy = parse_policy(POLICY, "week.yaml")
    policies.apply(catalog, policy, POLICY, "week.yaml", at=clock.now)
    executor = MemoryExecutor(clock)
    scheduler = Scheduler(catalog, executor, "sim", clock=clock)
    clock.now = START
    while clock.now < END:
        if not DOWN <= clock.now < BACK:
            scheduler.run_once()
            wake = scheduler.next_wakeup(clock.now)
        else:
            wake = BACK
        if clock.now < DOWN and wake > DOWN:
            wake = DOWN
        clock.now = min(wake, END)
    return executor


def expected_backups() -> dict[tuple[str, datetime], tuple[str, int]]:
    """(resource, due) → (state, attempts), from the schedules by hand."""
    expected = {}
    for resource, (minutes, window_m, _) in EVERY.items():
        due = START
        while due < END:
            window = timedelta(minutes=window_m)
            if DOWN <= due < BACK and due + window <= BACK:
                outcome = ("missed", 0)
            elif (resource, due) == FAILS_ALWAYS:
                outcome = ("failed", MAX_ATTEMPTS)
            elif (resource, due) == FAILS_ONCE:
                outcome = ("succeeded", 2)
            else:
                outcome = ("succeeded", 1)
            expected[(resource, due)] = outcome
            due += timedelta(minutes=minutes)
    return expected


def ran_at(due: datetime, attempts: int) -> datetime:
    """When a successful backup ran: on time, at restart, or after its retry's backoff."""
    if DOWN <= due < BACK:
        return BACK
    return due + (timedelta(seconds=30) if attempts == 2 else timedelta(0))


@pytest.mark.slow
def test_a_week_of_three_tiers_runs_exactly_the_expected_jobs(tmp_path: Path) -> None:
    with open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        executor = simulate(catalog)
        with catalog.session() as session:
            jobs = session.scalars(select(Job)).all()
    backups = {
        (j.resource, as_utc(j.scheduled_for)): (j.state, j.attempts)
        for j in jobs
        if j.kind == "backup"
    }
    expected = expected_backups()
    assert backups == expected
    # 2016 + 672 + 168 runs in a week; the outage misses some of each tier,
    # and what was still inside its start window ran when the server came back.
    assert len(backups) == 2016 + 672 + 168
    assert {r for (r, _), v in expected.items() if v[0] == "missed"} == set(EVERY)
    assert backups[("acme-db", datetime(2026, 3, 4, 13, 5, tzinfo=UTC))] == ("succeeded", 1)
    assert backups[("initech-app", datetime(2026, 3, 4, 13, 0, tzinfo=UTC))] == ("succeeded", 1)
    assert backups[("globex-files", datetime(2026, 3, 4, 13, 0, tzinfo=UTC))] == ("missed", 0)

    # One copy per successful backup of a tier with a DR copy, and only those.
    succeeded = {k for k, v in expected.items() if v[0] == "succeeded"}
    copies = sorted((j.resource, j.state) for j in jobs if j.kind == "copy")
    assert copies == sorted((r, "succeeded") for r, _ in succeeded if EVERY[r][2])

    # Retention: once a day per rule and vault, at midnight.
    retention = sorted(
        (j.plan, j.vault, as_utc(j.scheduled_for)) for j in jobs if j.kind == "retention"
    )
    days = [START + timedelta(days=d) for d in range(7)]
    rules = [
        ("premium", "primary"),
        ("premium", "dr"),
        ("standard", "primary"),
        ("standard", "dr"),
        ("basic", "primary"),
    ]
    assert retention == sorted((p, v, d) for p, v in rules for d in days)
    assert all(j.state == "succeeded" for j in jobs if j.kind == "retention")

    # What each midnight forgot, worked out from when the backups ran.
    made: dict[tuple[str, str], list[datetime]] = {}
    for (resource, due), (state, attempts) in sorted(expected.items()):
        if state != "succeeded":
            continue
        at = ran_at(due, attempts)
        made.setdefault((resource, "primary"), []).append(at)
        if EVERY[resource][2]:
            made.setdefault((resource, "dr"), []).append(at)
    want_forgotten = set()
    for (resource, vault), times in made.items():
        keep = KEEP[(resource, vault)]
        gone: set[datetime] = set()
        for day in days:
            present = [t for t in times if t < day and t not in gone]
            newest = max(present, default=None)
            for t in present:
                if t != newest and day - t > keep:
                    want_forgotten.add((day, vault, resource, t))
                    gone.add(t)
    assert set(executor.forgotten) == want_forgotten
    # Days 2 to 7 each forget a day's worth of the premium tier's points.
    assert len(want_forgotten) > 1000
