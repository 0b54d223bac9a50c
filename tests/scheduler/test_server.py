"""A real `reprieve server` running a policy on its own.

Every minute it backs up a folder to a local vault and copies each point to
a DR vault on its own SeaweedFS. Status and /metrics report the RPO as ok;
then the DR SeaweedFS is stopped, and replication lag turns at risk (past
80% of the RPO) and then breached, while backups stay ok.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import FAST_KDF, PASSWORD, ok, use_seaweed
from seaweed import Seaweed, free_ports, start_seaweed

POLICY = """
version: 1
vaults:
  primary: {{url: "{primary}"}}
  dr: {{url: "{dr}"}}
tiers:
  # A tier of our own: cron cannot fire faster than once a minute.
  minute: {{rto: 15m, rpo: 90s, architecture: active-active, drills: monthly, plan: minute}}
tenants:
  acme: {{tier: minute}}
resources:
  acme-files: {{kind: files, tenant: acme, paths: ["{data}"]}}
plans:
  minute:
    rules:
      - name: every-minute
        schedule: "* * * * *"
        vault: primary
        start_window: 50s
        completion_window: 5m
        retention: 1d
        copies: [{{vault: dr, retention: 1d}}]
"""


@pytest.fixture
def dr_region(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seaweed]:
    server = start_seaweed(tmp_path / "dr-s3")
    use_seaweed(monkeypatch, server)
    yield server
    server.stop()


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def status_of(resource: str) -> dict[str, Any]:
    rows = ok("status", "--json").json()
    return next(r for r in rows if r["resource"] == resource)


@pytest.mark.slow
def test_a_server_backs_up_copies_and_reports_lag_turning_to_breach(
    tmp_path: Path, dr_region: Seaweed
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_text("id,total\n1,10\n")
    primary = tmp_path / "primary"
    boto3.client("s3", endpoint_url=dr_region.endpoint).create_bucket(Bucket="dr-region")
    dr = f"s3://dr-region/prod?endpoint={dr_region.endpoint}"
    ok("vault", "init", "--vault", primary, *FAST_KDF)
    ok("vault", "init", "--vault", dr, *FAST_KDF)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(primary=primary, dr=dr, data=data))
    ok("policy", "apply", policy)

    port = free_ports(1)[0]
    env = {**os.environ, "REPRIEVE_PASSWORD": PASSWORD}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "reprieve", "server", "--listen", f"127.0.0.1:{port}",
         "--poll", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # A scheduled backup, copied to the DR region.
        def copied() -> bool:
            return bool(status_of("acme-files")["last_copy"])

        wait_for("a backup and its copy", copied, timeout=110)
        row = status_of("acme-files")
        assert (row["tenant"], row["tier"], row["rpo_target_s"]) == ("acme", "minute", 90)
        assert row["state"] == "ok"
        assert row["rpo_s"] < 72 and row["replication_lag_s"] < 72
        points = ok("points", "list", "--vault", primary, "--json").json()
        copies = ok("points", "list", "--vault", dr, "--json").json()
        assert len(points) >= 1
        assert {p["time"] for p in copies} <= {p["time"] for p in points}
        assert all(p["tags"]["reprieve.rule"] == "minute/every-minute" for p in points)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert (
            'reprieve_rpo_target_seconds{resource="acme-files",tenant="acme",tier="minute"} 90.0'
            in metrics
        )
        assert (
            'reprieve_jobs_total{kind="backup",status="succeeded",tenant="acme",tier="minute"}'
            in metrics
        )
        assert (
            'reprieve_replication_lag_seconds{source="primary",target="dr",tier="minute"}'
            in metrics
        )
        assert 'reprieve_vault_bytes{storage_class="STANDARD",vault="primary"}' in metrics

        # The DR region goes away: backups go on, copies fail, lag climbs.
        dr_region.stop()
        seen: list[str] = []

        def breached() -> bool:
            row = status_of("acme-files")
            seen.append(row["replication_state"])
            assert row["backup_state"] == "ok", row
            return bool(row["replication_state"] == "breached")

        wait_for("replication lag to breach the RPO", breached, timeout=240)
        assert "at_risk" in seen
        assert seen.index("at_risk") < seen.index("breached")
        assert status_of("acme-files")["state"] == "breached"
        failed = ok("jobs", "list", "--state", "failed", "--json").json()
        pending = ok("jobs", "list", "--state", "pending", "--json").json()
        assert any(j["kind"] == "copy" for j in failed + pending)
        assert all(j["error"] for j in failed)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        finally:
            log.close()
    assert server.returncode == 0, (tmp_path / "server.log").read_text()[-3000:]
    # Every backup and copy left its event in the hash chain.
    events = ok("audit", "list", "--json").json()
    assert {"policy.apply", "backup", "copy"} <= {e["action"] for e in events}
    assert json.loads(ok("audit", "verify", "--json").stdout)["problems"] == []
