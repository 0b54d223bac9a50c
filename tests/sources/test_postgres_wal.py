"""WAL around real PostgreSQL 15: archive mode across the OS-user line, a warm
standby that follows and promotes, and expiry behind the oldest base backup."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

from conftest import PASSWORD, ok
from pgwork import RESOURCE, connect_restored, protected, wait_until
from seaweed import free_ports

from reprieve.vault.keys import Secret
from reprieve.vault.logs import lease
from reprieve.vault.repository import Vault, backend_for

POLICY = """
version: 1
vaults:
  dr: {{url: "{vault}"}}
tiers:
  premium: {{rto: 15m, rpo: 5m, architecture: warm-standby, drills: monthly, plan: db}}
tenants:
  acme: {{tier: premium}}
resources:
  {resource}: {{kind: postgres, tenant: acme, connection: "{dsn}", wal_mode: stream}}
plans:
  db:
    rules:
      - {{name: nightly, schedule: "0 1 * * *", vault: dr, retention: 7d}}
"""


def _count(port: int) -> int:
    with connect_restored(port) as conn:
        row = conn.execute("SELECT count(*) FROM t").fetchone()
    assert row is not None
    return int(row[0])


def test_archive_command_run_by_the_database_user_reaches_the_vault(tmp_path: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="reprieve-spool-"))
    shared.chmod(0o755)
    try:
        _archive_through_the_helper(tmp_path, shared / RESOURCE)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _archive_through_the_helper(tmp_path: Path, spool: Path) -> None:
    setup = tmp_path / "setup.txt"
    setup.write_text(
        ok("wal", "setup", "--resource", RESOURCE, "--spool", spool, "--spool-max", "1GiB").stdout
    )
    (command,) = [ln for ln in setup.read_text().splitlines() if ln.startswith("archive_command")]
    archive = command.split("=", 1)[1].strip().strip("'")
    settings = {"archive_mode": "on", "archive_command": archive}
    with protected(tmp_path, settings) as p:
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
        p.base_backup()
        p.sql("INSERT INTO t SELECT g FROM generate_series(1001, 2000) g")
        (name,) = p.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
        wait_until(lambda: (spool / name).exists(), what=f"{name} in the spool")
        if os.geteuid() == 0:  # written by archive_command, run as the database's user
            assert (spool / name).stat().st_uid == pwd.getpwnam("postgres").pw_uid

        shipped = p.ok("wal", "ship", "--resource", RESOURCE, "--spool", spool)
        assert "shipped" in shipped.stdout
        doc = p.restore("r", "--latest").json()

        assert _count(doc["port"]) == 2000


def test_standby_follows_the_primary_and_after_promote_accepts_writes(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
        p.base_backup()
        started = p.ok(
            "standby", "start", "--resource", RESOURCE, "--target", p.work / "standby",
            "--port", str(port), "--json",
        ).json()  # fmt: skip
        assert started["state"] == "following"

        p.sql("INSERT INTO t SELECT g FROM generate_series(1001, 3000) g")
        p.wait_archived()
        wait_until(lambda: _count(port) == 3000, what="the standby to replay the new rows")
        (row,) = p.ok("standby", "list", "--json").json()
        assert row["state"] == "following" and isinstance(row["lag_s"], float)
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(vault=p.vault, resource=RESOURCE, dsn=p.pg.dsn))
        p.ok("policy", "apply", policy)
        # With the policy applied, the connection comes from it.
        assert p.ok("backup", "postgres", "--resource", RESOURCE, "--json").json()["bytes"] > 0
        (status,) = p.ok("status", "--json").json()
        assert status["resource"] == RESOURCE and status["standby_state"] == "following"
        assert isinstance(status["standby_lag_s"], float)

        p.sql("INSERT INTO t SELECT g FROM generate_series(3001, 3500) g")
        p.wait_archived()
        promoted = p.ok("standby", "promote", "--resource", RESOURCE, "--json").json()

        assert promoted["promote_s"] < 30
        # Promote replays what the vault holds first: nothing archived is left behind.
        assert _count(port) == 3500
        with connect_restored(port) as conn:
            conn.execute("INSERT INTO t VALUES (99999)")
            conn.commit()
        assert _count(port) == 3501
        (row,) = p.ok("standby", "list", "--json").json()
        assert row["state"] == "promoted"


def test_expiry_keeps_wal_for_the_oldest_base_backup_and_for_leases(tmp_path: Path) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        first = p.base_backup()
        for i in range(3):
            p.sql("INSERT INTO t VALUES (%s)", (i,))
            p.wait_archived()
        second = p.base_backup()
        p.sql("INSERT INTO t VALUES (100)")
        p.wait_archived()

        def names() -> list[str]:
            rows = p.ok("wal", "list", "--resource", RESOURCE, "--json").json()
            return [str(r["name"]) for r in rows if len(r["name"]) == 24]

        before = names()
        assert min(before) <= first["start_wal"] < second["start_wal"]
        vault = Vault.open(backend_for(str(p.vault)), Secret.passphrase(PASSWORD))
        with lease(vault, RESOURCE, first["start_wal"]):  # as a running restore would
            p.ok("forget", first["point"], "--prune")
            # Only what came before the first base backup went.
            assert names() == [n for n in before if n[8:] >= first["start_wal"][8:]]

        p.ok("prune")

        after = names()
        assert after == [n for n in before if n[8:] >= second["start_wal"][8:]]
        assert len(after) < len(before)
        doc = p.restore("r", "--latest").json()
        assert _count(doc["port"]) == 4


def test_standby_list_is_empty_without_standbys(tmp_path: Path) -> None:
    assert ok("standby", "list", "--json", env={"REPRIEVE_HOME": str(tmp_path)}).json() == []


def test_check_reports_a_timeline_without_its_history_file(tmp_path: Path) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int)")
        p.base_backup()
        p.wait_archived()
        assert p.ok("check", "--json").json()["databases"][0]["ok"]
        stray = tmp_path / "000000020000000000000009"
        stray.write_bytes(os.urandom(4096))  # as if a promoted copy archived here
        p.ok("wal", "push", stray, "--resource", RESOURCE, "--spool", tmp_path / "spool")

        check = p.cli("check", "--json")

    assert check.code == 3
    (db,) = check.json()["databases"]
    assert db["timeline_conflicts"] == ["timeline 2 has segments but no 00000002.history"]
    assert db["window"]["earliest"] is not None
