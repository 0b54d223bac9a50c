"""Two `reprieve server` processes on one PostgreSQL catalog never run a job twice.

The policy is applied as if twenty minutes ago, with a start window of an
hour, so both servers start with 160 backups due at once and race for them.
Every backup tags its point with its job id: a job run twice would leave
two points with one id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FAST_KDF, PASSWORD, ok
from pg import Postgres
from seaweed import free_ports

from reprieve.catalog import policies
from reprieve.catalog.db import open_catalog
from reprieve.policy.loader import parse_policy

RESOURCES = 8
AGO = timedelta(minutes=20)


def policy_text(vault: Path, data: Path) -> str:
    resources = "\n".join(
        f'  app-{i}: {{kind: files, tenant: acme, paths: ["{data / str(i)}"]}}'
        for i in range(RESOURCES)
    )
    return f"""
version: 1
vaults:
  primary: {{url: "{vault}"}}
tiers:
  minute: {{rto: 15m, rpo: 2m, architecture: active-active, drills: monthly, plan: minute}}
tenants:
  acme: {{tier: minute}}
resources:
{resources}
plans:
  minute:
    rules:
      - {{name: every-minute, schedule: "* * * * *", vault: primary, start_window: 1h,
         completion_window: 2h, retention: 1d}}
"""


@pytest.mark.slow
def test_two_servers_share_the_due_jobs_and_run_each_once(
    tmp_path: Path, postgres: Postgres
) -> None:
    url = postgres.create_database("two_servers")
    vault = tmp_path / "vault"
    data = tmp_path / "data"
    for i in range(RESOURCES):
        (data / str(i)).mkdir(parents=True)
        (data / str(i) / "file.txt").write_text(f"resource {i}\n")
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    text = policy_text(vault, data)
    with open_catalog(url) as catalog:
        applied = datetime.now(UTC) - AGO
        policies.apply(catalog, parse_policy(text, "policy.yaml"), text, "policy.yaml", at=applied)

    env = {**os.environ, "REPRIEVE_PASSWORD": PASSWORD, "REPRIEVE_CATALOG_URL": url}
    servers = []
    logs = []
    for n, port in enumerate(free_ports(2)):
        log = (tmp_path / f"server{n}.log").open("wb")
        logs.append(log)
        args = ["server", "--listen", f"127.0.0.1:{port}", "--poll", "0.2", "--jobs", "3"]
        args += ["--per-vault", "8"]
        command = [sys.executable, "-m", "reprieve", *args]
        servers.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            waiting = ok("jobs", "list", "--state", "pending", "--json", env=env).json()
            running = ok("jobs", "list", "--state", "running", "--json", env=env).json()
            done = ok("jobs", "list", "--state", "succeeded", "--limit", "1000", "--json", env=env)
            if not waiting and not running and len(done.json()) >= RESOURCES * 20:
                done_at = datetime.now(UTC)
                break
            time.sleep(2)
        else:
            raise AssertionError("the servers did not finish the due jobs in 5 minutes")
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server, log in zip(servers, logs, strict=True):
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()

    jobs = ok("jobs", "list", "--limit", "100000", "--json", env=env).json()
    # Runs that came due as the servers were stopped may still wait.
    settled = done_at - timedelta(seconds=5)
    due = [j for j in jobs if j["kind"] == "backup" and _when(j) < settled]
    assert len(due) >= RESOURCES * 20
    assert {j["state"] for j in due} == {"succeeded"}
    assert all(j["attempts"] == 1 for j in due)
    backups = [j for j in jobs if j["kind"] == "backup" and j["state"] == "succeeded"]
    # Both servers took part.
    assert len({j["server"] for j in backups}) == 2

    points = ok("points", "list", "--vault", vault, "--json").json()
    per_job = Counter(p["tags"]["job"] for p in points)
    assert max(per_job.values()) == 1
    assert set(per_job) == {str(j["id"]) for j in backups}
    # And the catalog's audit trail holds one backup event per job.
    events = ok("audit", "list", "--json", env=env).json()
    audited = Counter(e["details"]["job"] for e in events if e["action"] == "backup")
    assert set(audited.values()) == {1}
    assert len(audited) == len(backups)


def _when(job: dict[str, str]) -> datetime:
    return datetime.fromisoformat(job["scheduled_for"].replace("Z", "+00:00"))
