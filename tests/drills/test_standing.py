"""Drills on a schedule, and what status and /metrics say of them: the last
drill, overdue drills, the RTO trend, and the predicted restore time."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FAST_KDF, PASSWORD, ok

from reprieve.catalog import policies
from reprieve.catalog.db import open_catalog
from reprieve.catalog.models import DrillResource, PointRecord
from reprieve.catalog.points import vault_key
from reprieve.drills import store
from reprieve.drills.standing import standings
from reprieve.policy.loader import parse_policy
from reprieve.scheduler.execute import VaultExecutor
from reprieve.scheduler.metrics import Metrics
from reprieve.scheduler.plan import DRILL, series
from reprieve.scheduler.queue import JobView

POLICY = """
version: 1
vaults:
  primary: {{url: "{primary}"}}
tiers:
  premium: {{rto: 15m, rpo: 5m, architecture: active-active, drills: monthly, plan: p}}
  basic: {{rto: 240m, rpo: 60m, architecture: pilot-light, drills: semi-annually,
           plan: p, drill_schedule: "{cron}"}}
tenants:
  acme: {{tier: premium}}
  initech: {{tier: basic}}
resources:
  app: {{kind: files, tenant: acme, paths: ["{data}"]}}
  tool: {{kind: files, tenant: initech, paths: ["{data}"]}}
  cluster: {{kind: kubernetes, tenant: initech}}
plans:
  p:
    rules:
      - {{name: r, continuous: true, vault: primary, retention: 7d}}
"""


def _policy(tmp_path: Path, cron: str = "30 4 * * 1") -> str:
    return POLICY.format(primary=tmp_path / "v", data=tmp_path / "data", cron=cron)


def test_each_tier_drills_at_its_frequency_or_its_own_schedule(tmp_path: Path) -> None:
    drills = {s.resource: s for s in series(parse_policy(_policy(tmp_path))) if s.kind == DRILL}

    assert drills["app"].schedule == "0 3 1 * *"  # premium: monthly, the seed's default
    assert drills["tool"].schedule == "30 4 * * 1"  # basic: the tier's own drill_schedule
    assert drills["app"].vault == "primary" and drills["app"].tier == "premium"
    assert "cluster" not in drills  # no drill of a kubernetes resource exists yet


def test_a_scheduled_drill_runs_records_and_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRIEVE_PASSWORD", PASSWORD)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.bin").write_bytes(os.urandom(200_000))
    ok("vault", "init", "--vault", tmp_path / "v", *FAST_KDF)
    env = {"REPRIEVE_HOME": str(tmp_path / "home")}
    ok("backup", "files", tmp_path / "data", "--vault", tmp_path / "v", "--resource", "app",
       env=env)  # fmt: skip
    policy = parse_policy(_policy(tmp_path))
    now = datetime.now(UTC)
    view = JobView(
        id=1, kind=DRILL, plan="p", rule="drill-premium", resource="app", tenant="acme",
        tier="premium", vault="primary", target=None, scheduled_for=now, start_by=now,
        finish_by=now, state="running", attempts=1, parent_id=None, claimed_by="test",
        started_at=now, finished_at=None, error=None, result=None,
    )  # fmt: skip
    with open_catalog(f"sqlite:///{tmp_path / 'home' / 'catalog.db'}") as catalog:
        result = VaultExecutor(catalog)(view, policy, threading.Event())

        (row,) = store.records(catalog)
        assert row.id == result["drill"] and row.passed and row.subject == "app"
        with catalog.session() as session:
            found = standings(session, policy, now - timedelta(days=1), datetime.now(UTC))
        app = found["app"]
        # The resource's own RTO: from choosing its point to its last check.
        span = row.document["recovered"][0]["span_s"]
        assert app.passed is True and app.rto_s is not None and abs(app.rto_s - span) < 0.001
        assert row.rto_s is not None and span <= row.rto_s
        assert app.last_drill is not None
        assert app.due == app.last_drill + timedelta(days=31)
        assert not app.overdue
        # One drill measured: the prediction is its own restore speed on the
        # newest point, plus what it spent outside the restore.
        assert app.predicted_rto_s is not None
        assert abs(app.predicted_rto_s - span) < 0.5 * span + 0.05
        assert found["tool"].last_drill is None and found["tool"].passed is None

        metrics = Metrics(catalog, lambda: (now - timedelta(days=1), policy), lambda: now)
        scraped = {
            (s.name, s.labels.get("resource")): s.value
            for family in metrics.registry.collect()
            for s in family.samples
        }
    assert scraped[("reprieve_drill_passed", "app")] == 1.0
    assert scraped[("reprieve_drill_rto_seconds", "app")] == app.rto_s
    assert ("reprieve_drill_passed", "tool") not in scraped
    assert (
        scraped[("reprieve_drill_due_timestamp_seconds", "tool")]
        == (now - timedelta(days=1) + timedelta(days=184)).timestamp()
    )


def test_overdue_failing_slowing_and_too_slow_to_restore(tmp_path: Path) -> None:
    """Standing computed from drill history written straight into the catalog,
    against figures worked out by hand."""
    policy = parse_policy(_policy(tmp_path))
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    gib = 2**30
    with open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        with catalog.session() as session:
            # app (premium, RTO 900 s): drills 70, 50, 40 days ago, each slower than
            # the one before; 1 GiB restored in 10 s, RTO = restore + 5 s each time.
            for days, rto in ((70, 300.0), (50, 400.0), (40, 500.0)):
                session.add(
                    DrillResource(
                        drill=f"d{days}", resource="app", kind="files",
                        started_at=now - timedelta(days=days), passed=days != 40,
                        rto_s=rto, rpo_s=60.0, restore_s=rto - 5, bytes_read=gib,
                    )
                )  # fmt: skip
            session.add(
                PointRecord(
                    vault=vault_key(str(tmp_path / "v")), vault_id="x", point="p1",
                    resource="app", kind="files", time=now - timedelta(hours=1), tags={},
                    bytes=3 * gib, recorded_at=now,
                )
            )  # fmt: skip
        with catalog.session() as session:
            found = standings(session, policy, now - timedelta(days=400), now)
        policies.apply(catalog, policy, _policy(tmp_path), "p.yaml")

    app = found["app"]
    assert app.last_drill == now - timedelta(days=40) and app.passed is False
    # Monthly: due 31 days after the last drill, overdue 7 days after that.
    assert app.due == now - timedelta(days=9) and app.overdue is True
    # 500 s is under 80% of 900 s, but three drills in a row got slower, past half the target.
    assert app.rto_trend == "at_risk"
    # Median speed: 1 GiB in 395 s; 3 GiB then takes 1185 s, plus the median 5 s outside.
    assert app.predicted_rto_s is not None
    assert abs(app.predicted_rto_s - (3 * 395 + 5)) < 1e-6
    assert app.prediction_state == "breached"
    # tool (basic) never drilled and has no point: due half a year after the policy.
    assert "cluster" not in found  # never drilled, so never overdue either
    tool = found["tool"]
    assert tool.due == now - timedelta(days=400) + timedelta(days=184) and tool.overdue
    assert tool.predicted_rto_s is None and tool.prediction_basis == "no point yet"

    # status says it too, and warns that app could not be restored within its RTO.
    shown = ok("status", "--catalog-url", f"sqlite:///{tmp_path / 'catalog.db'}")
    app_line = next(line for line in shown.stdout.splitlines() if line.startswith("app "))
    assert "FAILED (overdue)" in app_line
    (warning,) = shown.stderr.splitlines()
    assert warning.startswith("reprieve: warning: restoring app would take about 19m")
    assert "over its RTO of 15m" in warning
