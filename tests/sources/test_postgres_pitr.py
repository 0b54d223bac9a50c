"""Point-in-time recovery of a real PostgreSQL 15 cluster from base backups and WAL."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from pgwork import RESOURCE, commit_times, connect_restored, pg_ctl, protected


def _ids(port: int) -> list[int]:
    with connect_restored(port) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM t ORDER BY id").fetchall()]


def test_restore_to_a_time_recovers_exactly_the_rows_committed_by_then(tmp_path: Path) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
        p.sql("INSERT INTO t SELECT g, 'before the base backup' FROM generate_series(1, 500) g")
        p.base_backup()
        for i in range(501, 561):  # one transaction each, so each has its own commit time
            p.sql("INSERT INTO t VALUES (%s, 'after')", (i,))
            time.sleep(0.01)
        p.wait_archived()
        rows = commit_times(p)
        target = rows[530][1]  # the commit time of one row in the middle
        expected = [i for i, ts in rows if ts <= target]
        assert 500 < len(expected) < 560

        doc = p.restore("r", "--to-time", target.isoformat()).json()

        assert _ids(doc["port"]) == expected
        # The boundary is inclusive: the recovered state ends at that very commit.
        assert doc["recovered_to"] == target.isoformat()
        assert doc["rpo_gap_s"] == 0
        assert set(doc["phases"]) == {"fetch_base", "fetch_wal", "replay", "promote"}
        assert abs(sum(doc["phases"].values()) - doc["duration_s"]) < 0.01
        assert doc["wal_files"] >= 1


def test_restore_to_before_a_bad_migration_keeps_the_corrupted_rows_intact(
    tmp_path: Path,
) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int PRIMARY KEY, amount numeric, note text)")
        p.base_backup()
        p.sql("INSERT INTO t SELECT g, g * 1.5, 'order ' || g FROM generate_series(1, 2000) g")
        good = p.sql("SELECT id, amount, note FROM t ORDER BY id")
        time.sleep(1.2)
        (t1,) = p.sql("SELECT clock_timestamp()")[0]
        p.sql("UPDATE t SET amount = 0, note = 'oops' WHERE id % 3 = 0")  # the bad migration
        p.sql("ALTER TABLE t DROP COLUMN note")
        p.wait_archived()

        doc = p.restore("r", "--to-time", (t1 - timedelta(seconds=1)).isoformat()).json()

        with connect_restored(doc["port"]) as conn:
            restored = conn.execute("SELECT id, amount, note FROM t ORDER BY id").fetchall()
        assert restored == good


def test_crash_during_synchronous_streaming_loses_no_acknowledged_commit(
    tmp_path: Path,
) -> None:
    settings = {"synchronous_standby_names": "pg_receivewal"}
    with protected(tmp_path, settings) as p:
        # Until the streamer is there, every commit waits for it.
        with p.streaming(synchronous=True):
            p.sql("CREATE TABLE t (id int PRIMARY KEY)")
            p.base_backup()
            acknowledged: list[int] = []
            failed = threading.Event()

            def burst() -> None:
                try:
                    with psycopg.connect(p.pg.url, autocommit=True) as conn:
                        for i in range(1, 1_000_000):
                            conn.execute("INSERT INTO t VALUES (%s)", (i,))
                            acknowledged.append(i)  # the commit returned: acknowledged
                except psycopg.Error:
                    failed.set()

            writer = threading.Thread(target=burst)
            writer.start()
            time.sleep(1.0)
            crashed = pg_ctl(p.pg.cluster / "data", "stop", "-m", "immediate")
            assert crashed.returncode == 0, crashed.stderr
            writer.join(30)
            assert failed.is_set() and len(acknowledged) > 50
        # Leaving the block stopped the streamer, which first ships what it holds.

        doc = p.restore("r", "--latest").json()

        restored = _ids(doc["port"])
        assert set(acknowledged) <= set(restored)
        # At most the one in flight at the crash may be there without an acknowledgement.
        assert len(restored) - len(acknowledged) <= 1


def test_missing_wal_is_reported_by_check_and_by_a_restore_that_needs_it(
    tmp_path: Path,
) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.base_backup()
        for i in range(4):
            p.sql(
                "INSERT INTO t SELECT g FROM generate_series(%s::int, %s::int) g",
                (i * 100, i * 100 + 99),
            )
            p.sql("SELECT pg_switch_wal()")
        p.sql("INSERT INTO t VALUES (100000)")
        p.wait_archived()
        whole = sorted(
            row["name"]
            for row in p.ok("wal", "list", "--resource", RESOURCE, "--json").json()
            if not row["partial"] and len(row["name"]) == 24
        )
        assert p.ok("check").code == 0
        lost = whole[-2]
        (p.vault / "logs" / RESOURCE / lost).unlink()

        check = p.cli("check", "--json")
        assert check.code == 3
        assert f"segment {lost} is missing" in " ".join(check.json()["errors"])
        restore = p.restore("r", "--latest")
        assert restore.code == 3
        assert lost in restore.stderr
        assert len(restore.stderr.strip().splitlines()) == 1


def test_restore_from_the_dr_vault_alone(tmp_path: Path) -> None:
    with protected(tmp_path) as p:
        with p.streaming():
            p.sql("CREATE TABLE t (id int PRIMARY KEY)")
            p.base_backup()
            p.sql("INSERT INTO t SELECT g FROM generate_series(1, 3000) g")
            p.sql("SELECT pg_switch_wal()")
            p.sql("INSERT INTO t VALUES (5000)")
            p.wait_archived()
            expected = [r[0] for r in p.sql("SELECT id FROM t ORDER BY id")]
            dr = tmp_path / "dr"
            p.ok("vault", "init", "--vault", dr, "--kdf-memory-kib", "8192")
            copied = p.ok("copy", "--from", p.vault, "--to", dr, "--json").json()
            assert copied["wal_files_copied"] >= 2
        shutil.rmtree(p.vault)  # the primary region is gone

        p.env["REPRIEVE_VAULT"] = str(dr)
        doc = p.restore("r", "--latest").json()

        assert _ids(doc["port"]) == expected


def test_target_outside_the_window_and_unreachable_server_fail_in_one_line(
    tmp_path: Path,
) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int)")
        p.base_backup()
        p.sql("INSERT INTO t VALUES (1)")
        p.wait_archived()
        early = p.restore("r", "--to-time", "2000-01-01 00:00:00+00")
        assert early.code == 2
        assert "outside the restorable window (" in early.stderr
        assert len(early.stderr.strip().splitlines()) == 1
        late = p.restore("r2", "--to-time", "2999-01-01 00:00:00+00")
        assert late.code == 2 and "outside the restorable window" in late.stderr
        assert not (p.work / "r2").exists()  # the attempt left nothing to clear
        # Its server log stays beside it, and a new restore there starts a new one.
        assert "recovery target was reached" in (p.work / "r2.recovery.log").read_text()
        again = p.restore("r2", "--latest").json()
        assert again["recovered_to"] is not None
        with connect_restored(again["port"]) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        busy = p.work / "busy"
        busy.mkdir()
        (busy / "keep.txt").write_text("mine")
        refused = p.restore("busy", "--latest")
        assert refused.code == 2 and "is not empty" in refused.stderr
        assert (busy / "keep.txt").read_text() == "mine"

        p.sql("CREATE ROLE plain LOGIN")
        plain = p.pg.dsn.replace("user=postgres", "user=plain")
        denied = p.cli("backup", "postgres", "--resource", RESOURCE, "--dsn", plain)
        assert denied.code == 1
        assert "lacks the REPLICATION permission" in denied.stderr
    gone = p.cli("backup", "postgres", "--resource", RESOURCE, "--dsn", p.pg.dsn)
    assert gone.code == 1
    assert gone.stderr.startswith("reprieve: cannot reach PostgreSQL")
    assert len(gone.stderr.strip().splitlines()) == 1


def test_a_full_target_disk_fails_in_one_line_and_leaves_no_half_restore(
    tmp_path: Path, small_disk: Path
) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int)")
        p.base_backup()
        p.wait_archived()
        disk = small_disk
        full = p.restore(str(disk / "r"), "--latest")
        assert full.code == 1
        assert len(full.stderr.strip().splitlines()) == 1
        assert f"writing the base backup into {disk / 'r'} failed at " in full.stderr
        assert full.stderr.strip().endswith("No space left on device")
        assert not (disk / "r").exists()


def test_wal_level_minimal_is_refused(tmp_path: Path) -> None:
    with protected(tmp_path, {"wal_level": "minimal", "max_wal_senders": "0"}) as p:
        refused = p.cli("backup", "postgres", "--resource", RESOURCE, "--dsn", p.pg.dsn)
    assert refused.code == 2
    assert "wal_level is 'minimal'" in refused.stderr


@pytest.mark.parametrize("how", ["xid", "lsn"])
def test_restore_to_a_transaction_or_a_log_position(tmp_path: Path, how: str) -> None:
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.base_backup()
        p.sql("INSERT INTO t VALUES (1)")
        with psycopg.connect(p.pg.url, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("INSERT INTO t VALUES (2)")
                row = conn.execute("SELECT pg_current_xact_id()").fetchone()
                assert row is not None
                xid = str(row[0])
            row = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
            assert row is not None
            lsn = str(row[0])
        p.sql("INSERT INTO t VALUES (3)")
        p.wait_archived()

        arg = ["--to-xid", xid] if how == "xid" else ["--to-lsn", lsn]
        doc = p.restore("r", *arg).json()

        assert _ids(doc["port"]) == [1, 2]
