"""Drills of a real PostgreSQL 15 cluster: restored in a sandbox cluster of its
own, checked with amcheck and the policy's SQL assertions, measured, and
always stopped and removed afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import FAST_KDF, PASSWORD
from pgwork import RESOURCE, Protected, protected, wait_until

POLICY = """
version: 1
vaults:
  primary: {{url: "{vault}"}}
tenants:
  acme: {{tier: premium}}
resources:
  {resource}:
    kind: postgres
    tenant: acme
    connection: "{dsn}"
    wal_mode: stream
    verify:
{checks}
plans:
  db:
    select: {{tenant: acme}}
    rules:
      - {{name: nightly, schedule: "0 1 * * *", vault: primary, retention: 7d}}
"""


def _apply(p: Protected, tmp_path: Path, checks: list[str]) -> None:
    text = POLICY.format(
        vault=p.vault,
        resource=RESOURCE,
        dsn=p.pg.dsn,
        checks="\n".join(f"      - {c}" for c in checks),
    )
    (tmp_path / "policy.yaml").write_text(text)
    p.ok("policy", "apply", tmp_path / "policy.yaml")


def _orders(p: Protected, count: int) -> None:
    p.sql("CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL, note text)")
    p.sql("CREATE INDEX orders_amount ON orders (amount)")
    p.sql(f"INSERT INTO orders SELECT g, g * 1.5, 'order ' || g FROM generate_series(1, {count}) g")


def _sandbox_servers() -> list[str]:
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "reprieve-drill-" in line and "-D" in line]


def test_database_failure_drill_recovers_every_committed_row(tmp_path: Path) -> None:
    with protected(tmp_path) as p, p.streaming():
        _orders(p, 3000)
        p.base_backup()
        for i in range(3001, 3041):  # committed after the base backup, one by one
            p.sql("INSERT INTO orders VALUES (%s, 1, 'late')", (i,))
        p.wait_archived()
        _apply(
            p,
            tmp_path,
            [
                "{name: every order, sql: 'SELECT count(*) FROM orders', expect: 3040}",
                "{name: no negative amounts, sql: "
                "'SELECT count(*) FROM orders WHERE amount < 0', expect: 0}",
            ],
        )

        result = p.cli("drill", "run", "--resource", RESOURCE, "--json")

        assert result.code == 0, result.stdout
        doc: dict[str, Any] = result.json()
        assert doc["passed"] is True and doc["scenario"] == "database-failure"
        checks = {c["name"]: c for c in doc["checks"]}
        assert set(checks) == {
            "server accepts connections",
            "amcheck",
            "every order",
            "no negative amounts",
        }
        assert all(c["passed"] for c in checks.values())
        assert checks["every order"]["evidence"]["got"] == "3040"
        # amcheck really ran over the restored indexes (orders_pkey, orders_amount, ...).
        assert checks["amcheck"]["evidence"]["indexes_checked"]["postgres"] >= 2
        (part,) = doc["recovered"]
        assert part["kind"] == "postgres" and part["recovered_to"] is not None
        # The primary's newest commit came back: nothing was lost.
        assert doc["rpo_s"] == 0
        names = [s["name"] for s in doc["steps"]]
        assert names[:2] == ["choose point", "restore"] and names[-1] == "verify"
        assert "restore: replay" in names
        assert doc["rto_s"] >= sum(s["duration_s"] for s in doc["steps"] if s["name"] == "verify")
        assert not _sandbox_servers()


def test_data_corruption_drill_recovers_to_just_before_the_damage(tmp_path: Path) -> None:
    with protected(tmp_path) as p, p.streaming():
        _orders(p, 2000)
        p.base_backup()
        for i in range(2001, 2011):
            p.sql("INSERT INTO orders VALUES (%s, 1, 'late')", (i,))
        time.sleep(1.1)
        (damage_at,) = p.sql("SELECT clock_timestamp()")[0]
        p.sql("UPDATE orders SET amount = -1 WHERE id % 7 = 0")  # the bad migration
        p.wait_archived()
        _apply(
            p,
            tmp_path,
            [
                "{name: no damaged amounts, sql: "
                "'SELECT count(*) FROM orders WHERE amount < 0', expect: 0}",
                "{name: every order, sql: 'SELECT count(*) FROM orders', expect: 2010}",
            ],
        )

        before = p.cli("drill", "run", "--resource", RESOURCE, "--json")
        assert before.code == 8  # the newest state carries the damage
        failed = [c["name"] for c in before.json()["checks"] if not c["passed"]]
        assert failed == ["no damaged amounts"]
        assert "no damaged amounts" in before.stderr

        doc = p.cli(
            "drill", "run", "--resource", RESOURCE, "--at", damage_at.isoformat(), "--json"
        ).json()

        assert doc["passed"] is True, doc["reasons"]
        assert doc["scenario"] == "data-corruption"
        assert doc["rpo_s"] == 0
        recovered_to = doc["recovered"][0]["recovered_to"]
        assert recovered_to is not None and recovered_to < damage_at.isoformat()
        assert doc["declared_at"][:19] == damage_at.astimezone(UTC).isoformat()[:19]

        # Given no moment, the drill finds it: recoveries bisect the WAL with the checks,
        # which must then be invariants (the count above grows after the base backup).
        _apply(
            p,
            tmp_path,
            [
                "{name: no damaged amounts, sql: "
                "'SELECT count(*) FROM orders WHERE amount < 0', expect: 0}",
            ],
        )
        found = p.cli(
            "drill", "run", "--resource", RESOURCE, "--scenario", "data-corruption", "--json"
        ).json()
        assert found["passed"] is True, found["reasons"]
        located = next(c for c in found["checks"] if c["name"] == "corruption located")
        good = datetime.fromisoformat(located["evidence"]["last_good"])
        bad = datetime.fromisoformat(located["evidence"]["first_bad"])
        # The damaging UPDATE committed after damage_at, and within the last second found.
        assert good < bad <= good + timedelta(seconds=1)
        assert good <= damage_at + timedelta(seconds=1) and bad >= damage_at
        assert found["declared_at"][:19] == bad.astimezone(UTC).isoformat()[:19]


def test_a_drill_killed_with_a_running_cluster_leaves_nothing_behind(tmp_path: Path) -> None:
    with protected(tmp_path) as p, p.streaming():
        _orders(p, 100)
        p.base_backup()
        p.wait_archived()
        _apply(p, tmp_path, ["{name: slow check, command: 'sleep 60'}"])
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        before = set(tmp.glob("reprieve-drill-*"))
        env = {**os.environ, "REPRIEVE_PASSWORD": PASSWORD, **p.env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "reprieve", "drill", "run", "--resource", RESOURCE],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: bool(_sandbox_servers()), "the sandbox cluster to start")
            time.sleep(1.0)  # into the checks
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wait_until(lambda: not _sandbox_servers(), "the sandbox cluster to stop")
        wait_until(lambda: set(tmp.glob("reprieve-drill-*")) <= before, "the sandbox to go")


def test_region_failure_drill_recovers_from_the_dr_copy_alone(tmp_path: Path) -> None:
    dr = tmp_path / "dr"
    with protected(tmp_path) as p:
        with p.streaming():
            _orders(p, 500)
            p.base_backup()
            for i in range(501, 521):
                p.sql("INSERT INTO orders VALUES (%s, 1, 'late')", (i,))
            p.wait_archived()
        p.ok("vault", "init", "--vault", dr, *FAST_KDF)
        p.ok("copy", "--from", p.vault, "--to", dr, "--resource", RESOURCE)
        text = POLICY.format(
            vault=p.vault,
            resource=RESOURCE,
            dsn=p.pg.dsn,
            checks="      - {name: every order, sql: 'SELECT count(*) FROM orders', expect: 520}",
        )
        primary = f'primary: {{url: "{p.vault}"}}'
        text = text.replace(primary, f'{primary}\n  dr: {{url: "{dr}"}}')
        text = text.replace(
            "retention: 7d}", "retention: 7d, copies: [{vault: dr, retention: 7d}]}"
        )
        (tmp_path / "policy.yaml").write_text(text)
        p.ok("policy", "apply", tmp_path / "policy.yaml")
        p.vault.rename(tmp_path / "primary-gone")  # the primary region is down

        result = p.cli("drill", "run", "--resource", RESOURCE, "--scenario", "region-failure",
                       "--json")  # fmt: skip

        assert result.code == 0, result.stdout
        doc = result.json()
        assert doc["recovered"][0]["vault"] == str(dr)
        checks = {c["name"]: c["passed"] for c in doc["checks"]}
        assert checks["DR vault only"] and checks["every order"] and checks["amcheck"]


def test_ransomware_drill_of_a_database_uses_a_locked_base_backup(tmp_path: Path) -> None:
    with protected(tmp_path) as p:
        locked = tmp_path / "locked"
        p.ok("vault", "init", "--vault", locked, "--lock", "governance",
             "--min-retention", "1d", "--max-retention", "30d", *FAST_KDF)  # fmt: skip
        p.env["REPRIEVE_VAULT"] = str(locked)
        with p.streaming():
            _orders(p, 300)
            p.ok("backup", "postgres", "--resource", RESOURCE, "--dsn", p.pg.dsn,
                 "--retain", "7d")  # fmt: skip
            p.wait_archived()
        (tmp_path / "policy.yaml").write_text(
            POLICY.format(
                vault=locked,
                resource=RESOURCE,
                dsn=p.pg.dsn,
                checks="      - {sql: 'SELECT count(*) FROM orders', expect: 300}",
            )
        )
        p.ok("policy", "apply", tmp_path / "policy.yaml")

        doc = p.cli(
            "drill", "run", "--resource", RESOURCE, "--scenario", "ransomware", "--json"
        ).json()

        assert doc["passed"] is True, doc["reasons"]
        proof = next(c for c in doc["checks"] if c["name"] == "point locked and unchanged")
        assert proof["evidence"]["enforced_by"] == "reprieve only (a folder vault)"
        assert proof["evidence"]["point"] == doc["recovered"][0]["point"]
