"""The job queue's rules: limits, retries, cancelling, and run --once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_KDF, ok, run_cli
from sqlalchemy import update

from reprieve.catalog import policies
from reprieve.catalog.db import Catalog, open_catalog
from reprieve.catalog.models import PolicyVersion
from reprieve.errors import StorageError
from reprieve.policy.loader import parse_policy
from reprieve.policy.model import Policy
from reprieve.scheduler import queue
from reprieve.scheduler.queue import JobView, Limits
from reprieve.scheduler.runner import Scheduler

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WIDE = Limits(per_vault=10)

POLICY = """
version: 1
vaults:
  primary: {url: /srv/primary}
  other: {url: /srv/other}
tiers:
  premium: {rto: 15m, rpo: 5m, architecture: active-active, drills: monthly, plan: p}
tenants:
  acme: {tier: premium}
resources:
  a: {kind: files, tenant: acme, paths: [/srv/a]}
  b: {kind: files, tenant: acme, paths: [/srv/b]}
  c: {kind: files, tenant: acme, paths: [/srv/c]}
plans:
  p:
    rules:
      - {name: r, schedule: "*/5 * * * *", vault: primary, start_window: 4m,
         completion_window: 10m, retention: 1d}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Any:
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as opened:
        policy = parse_policy(POLICY, "p.yaml")
        policies.apply(opened, policy, POLICY, "p.yaml", at=NOW - timedelta(minutes=1))
        yield opened


def due(catalog: Catalog) -> Policy:
    found = policies.current(catalog)
    assert found is not None
    with catalog.session() as session:
        queue.enqueue_due(session, found[1], NOW - timedelta(minutes=1), NOW)
    return found[1]


def test_the_per_vault_limit_holds_back_the_third_backup(catalog: Catalog) -> None:
    due(catalog)
    with catalog.session() as session:
        first = queue.claim(session, "s1", NOW, 10, Limits(per_vault=2))
    with catalog.session() as session:
        second = queue.claim(session, "s2", NOW, 10, Limits(per_vault=2))
    assert sorted(j.resource or "" for j in first) == ["a", "b"]
    assert second == []  # both slots on the vault are taken, whoever asks
    with catalog.session() as session:
        queue.finish(session, first[0], NOW, None, {"ok": True})
    with catalog.session() as session:
        third = queue.claim(session, "s2", NOW, 10, Limits(per_vault=2))
    assert [j.resource for j in third] == ["c"]


def test_a_failure_is_retried_with_backoff_then_recorded_failed(catalog: Catalog) -> None:
    due(catalog)
    with catalog.session() as session:
        (job,) = queue.claim(session, "s1", NOW, 1, WIDE)
        ended = queue.finish(session, job, NOW, None, error="vault down", retry=True)
    assert (ended.state, ended.attempts) == ("pending", 1)
    with catalog.session() as session:
        early = queue.claim(session, "s1", NOW + timedelta(seconds=29), 3, WIDE)
        assert job.id not in [j.id for j in early]
    at = NOW + timedelta(seconds=30)
    with catalog.session() as session:
        again = [j for j in queue.claim(session, "s1", at, 3, WIDE) if j.id == job.id]
        assert again and again[0].attempts == 2
        ended = queue.finish(session, again[0], at, None, error="vault down", retry=True)
    at += timedelta(seconds=60)
    with catalog.session() as session:
        again = [j for j in queue.claim(session, "s1", at, 3, WIDE) if j.id == job.id]
        ended = queue.finish(session, again[0], at, None, error="vault down", retry=True)
    assert (ended.state, ended.attempts, ended.error) == ("failed", 3, "vault down")


def test_a_job_that_cannot_start_in_its_window_is_missed(catalog: Catalog) -> None:
    due(catalog)
    with catalog.session() as session:
        queue.expire(session, NOW + timedelta(minutes=4), "s1")
        states = {j.resource: j.state for j in queue.listing(session)}
    assert states == {"a": "missed", "b": "missed", "c": "missed"}


def test_cancel_stops_a_running_job_through_its_heartbeat(catalog: Catalog) -> None:
    due(catalog)
    started = threading.Event()

    def slow(job: JobView, policy: Policy, stop: threading.Event) -> dict[str, Any]:
        started.set()
        if not stop.wait(30):
            raise StorageError("never stopped")
        raise StorageError("stopped midway")

    scheduler = Scheduler(catalog, slow, "s1", clock=lambda: NOW)
    (job,) = scheduler.tick(1)
    ended: list[JobView] = []
    worker = threading.Thread(target=lambda: ended.append(scheduler.run(job)))
    worker.start()
    assert started.wait(10)
    with catalog.session() as session:
        assert queue.cancel(session, job.id, NOW).state == "running"
    scheduler.heartbeat()
    worker.join(10)
    assert ended and ended[0].state == "cancelled"
    assert ended[0].error == queue.CANCELLED_BY_REQUEST


def test_a_stale_job_is_taken_back_from_its_dead_server_but_never_by_itself(
    catalog: Catalog,
) -> None:
    due(catalog)
    with catalog.session() as session:
        (job,) = queue.claim(session, "dead", NOW, 1, WIDE)
    later = NOW + queue.STALE_AFTER + timedelta(seconds=1)
    with catalog.session() as session:
        queue.expire(session, later, "dead")  # a server never takes back its own
        assert queue.get(session, job.id).state == "running"
    with catalog.session() as session:
        queue.expire(session, later, "alive")
        assert queue.get(session, job.id).state == "pending"
    with catalog.session() as session:
        taken = [j for j in queue.claim(session, "alive", later, 3, WIDE) if j.id == job.id]
    assert taken and (taken[0].claimed_by, taken[0].attempts) == ("alive", 2)
    # The first server comes back: its heartbeat tells it to stop, and it
    # cannot record an end for a run that is no longer its own.
    with catalog.session() as session:
        assert queue.beat(session, [job.id], later, "dead") == {job.id: queue.TAKEN_BACK}
    with catalog.session() as session, pytest.raises(queue.LostJob):
        queue.finish(session, job, later, None, {"point": "x"})
    with catalog.session() as session:
        ended = queue.finish(session, taken[0], later, None, {"point": "y"})
    assert (ended.state, ended.result) == ("succeeded", {"point": "y"})


def test_run_once_backs_up_what_is_due_and_status_reports_it(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("hello\n")
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY.replace("/srv/primary", str(vault))
        .replace("start_window: 4m", "start_window: 9m")
        .replace("/srv/a", str(data))
        .replace("/srv/b", str(data))
        .replace("/srv/c", str(data))
    )
    ok("policy", "apply", policy)
    before = ok("status", "--json").json()
    assert [r["last_backup"] for r in before] == [None, None, None]
    refused = run_cli("run")
    assert refused.code == 2 and "--once" in refused.stderr
    # Nothing is due until the next five-minute mark (unless one just passed).
    ran = ok("run", "--once", "--json").json()
    # As if the policy had been applied just before the last five-minute mark
    # (not so close to the next that it passes before the run).
    now = datetime.now(UTC)
    if (now.minute % 5) * 60 + now.second > 270:
        time.sleep(301 - (now.minute % 5) * 60 - now.second)
        now = datetime.now(UTC)
    mark = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    with open_catalog() as opened, opened.session() as session:
        session.execute(update(PolicyVersion).values(applied_at=mark - timedelta(seconds=30)))
    ran += ok("run", "--once", "--json").json()
    backups = [j for j in ran if j["kind"] == "backup"]
    assert sorted(j["resource"] for j in backups) == ["a", "b", "c"]
    assert {j["state"] for j in backups} == {"succeeded"}
    rows = ok("status", "--json").json()
    assert {r["resource"]: r["state"] for r in rows} == {"a": "ok", "b": "ok", "c": "ok"}
    assert all(r["rpo_s"] < 60 and r["last_backup"] for r in rows)
    points = ok("points", "list", "--vault", vault, "--json").json()
    assert sorted(p["resource"] for p in points) == ["a", "b", "c"]
    shown = ok("jobs", "show", str(backups[0]["id"]), "--json").json()
    assert shown["result"]["point"] in {p["id"] for p in points}
