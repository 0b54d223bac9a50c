"""A failover runbook's database steps on a real PostgreSQL 15 cluster: a
point-in-time restore step leaves a running copy with every archived row,
and a standby_promote step turns a warm standby into a writable primary."""

from __future__ import annotations

from pathlib import Path

import yaml
from pgwork import RESOURCE, connect_restored, protected, wait_until
from seaweed import free_ports


def _count(port: int) -> int:
    with connect_restored(port) as conn:
        row = conn.execute("SELECT count(*) FROM t").fetchone()
    assert row is not None
    return int(row[0])


def test_runbook_restores_a_database_and_promotes_a_standby(tmp_path: Path) -> None:
    restored_port, standby_port = free_ports(2)
    with protected(tmp_path) as p, p.streaming():
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.sql("INSERT INTO t SELECT g FROM generate_series(1, 800) g")
        p.base_backup()
        p.ok("standby", "start", "--resource", RESOURCE, "--target", p.work / "standby",
             "--port", str(standby_port))  # fmt: skip
        p.sql("INSERT INTO t SELECT g FROM generate_series(801, 1000) g")
        p.wait_archived()
        wait_until(lambda: _count(standby_port) == 1000, what="the standby to catch up")
        book = tmp_path / "failover.yaml"
        book.write_text(
            yaml.safe_dump(
                {
                    "name": "db-failover",
                    "tier": "premium",
                    "vaults": {"primary": {"url": str(p.vault)}},
                    "steps": [
                        {
                            "name": "restore orders",
                            "restore": {
                                "kind": "postgres",
                                "resource": RESOURCE,
                                "vault": "primary",
                                "target": str(p.work / "copy"),
                                "latest": True,
                                "port": restored_port,
                                "start": True,
                            },
                        },
                        {"name": "promote standby", "standby_promote": {"resource": RESOURCE}},
                    ],
                }
            )
        )

        planned = p.ok("runbook", "plan", book, "--json").json()
        result = p.cli("runbook", "run", book, "--execute", "--yes", "--json")

        assert result.code == 0, result.stderr
        doc = result.json()
        assert [s["name"] for s in doc["steps"]] == [s["name"] for s in planned["steps"]]
        assert [s["status"] for s in doc["steps"]] == ["done", "done"]
        assert _count(restored_port) == 1000
        # The promoted standby is a primary now: it takes writes.
        with connect_restored(standby_port) as conn:
            conn.execute("INSERT INTO t VALUES (1001)")
            conn.commit()
        assert _count(standby_port) == 1001
        (recorded,) = p.ok("drill", "list", "--json").json()
        assert recorded["kind"] == "runbook" and recorded["passed"] is True
        shown = p.ok("drill", "show", recorded["drill"], "--json").json()
        assert shown["recovered"][0]["kind"] == "postgres"
        assert shown["recovered"][0]["recovered_to"] is not None
