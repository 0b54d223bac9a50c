"""Commands that change state leave the same chained record in the catalog and
in the vault, and a catalog out of reach does not fail the command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conftest import FAST_KDF, PASSWORD, ok, run_cli

from reprieve.catalog import points
from reprieve.catalog.db import open_catalog
from reprieve.vault.immutability import audit_records
from reprieve.vault.keys import Secret
from reprieve.vault.repository import Vault, backend_for


def vault_trail(location: Path) -> list[dict[str, Any]]:
    vault = Vault.open(backend_for(str(location)), Secret.passphrase(PASSWORD))
    return audit_records(vault)


def backup(location: Path, data: Path) -> str:
    doc = ok("backup", "files", data, "--vault", location, "--resource", "app", "--json").json()
    return str(doc["point"])


def held(location: Path) -> list[str]:
    """The points of resource app the catalog lists as still in the vault."""
    with open_catalog() as catalog, catalog.session() as session:
        return [row.point for row in points.held(session, str(location), "app")]


def init(location: Path) -> None:
    ok("vault", "init", "--vault", location, *FAST_KDF)


def test_each_state_changing_command_is_chained_in_the_catalog_and_the_vault(
    tmp_path: Path,
) -> None:
    location = tmp_path / "vault"
    init(location)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("first")
    first = backup(location, data)
    (data / "a.txt").write_text("second")
    second = backup(location, data)
    ok("points", "hold", first, "--vault", location, "--reason", "case 7", "--json")
    ok("points", "release", first, "--vault", location, "--json")
    forget = ok("forget", first, "--vault", location, "--json")
    restore = ok("restore", second, "--vault", location, "--target", tmp_path / "out", "--json")
    key = ok(
        "vault",
        "key",
        "add",
        "--vault",
        location,
        *FAST_KDF,
        "--json",
        env={"REPRIEVE_NEW_PASSWORD": "another secret"},
    ).json()["added"]
    # The JSON documents stay alone on stdout.
    assert forget.json()["resources"][0]["remove"] == [first]
    assert restore.json()["point"] == second

    events = ok("audit", "list", "--json").json()
    assert [(e["action"], e["subject"]) for e in events] == [
        ("vault.init", str(location)),
        ("backup", "app"),
        ("backup", "app"),
        ("hold", first),
        ("release", first),
        ("forget", "points"),
        ("restore", "app"),
        ("key.add", key),
    ]
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert events[0]["details"]["lock"] is None
    assert events[1]["details"]["point"] == first
    assert events[3]["details"] == {"reason": "case 7"}
    assert events[5]["details"]["removed"] == [first]
    assert events[6]["details"]["target"] == str((tmp_path / "out").absolute())
    ok("audit", "verify")
    assert held(location) == [second]

    chained = {r["seq"]: r for r in vault_trail(location) if "seq" in r}
    assert sorted(chained) == [e["seq"] for e in events]
    for event in events:
        record = chained[event["seq"]]
        assert (record["action"], record["subject"], record["hash"]) == (
            event["action"],
            event["subject"],
            event["hash"],
        )


def test_a_backup_succeeds_and_is_recorded_in_the_vault_when_the_catalog_is_unreachable(
    tmp_path: Path,
) -> None:
    location = tmp_path / "vault"
    init(location)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("only")

    result = run_cli(
        "backup",
        "files",
        data,
        "--vault",
        location,
        "--resource",
        "app",
        "--json",
        env={"REPRIEVE_CATALOG_URL": "postgresql://nobody@127.0.0.1:1/x"},
    )

    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1
    assert warnings[0].startswith("reprieve: warning: not recorded in the catalog")
    point = result.json()["point"]
    records = [r for r in vault_trail(location) if r["action"] == "backup"]
    assert len(records) == 1
    assert (records[0]["subject"], records[0]["details"]["point"]) == ("app", point)
    assert "seq" not in records[0]


def test_copies_and_lifecycle_moves_keep_the_catalogs_points_current(tmp_path: Path) -> None:
    hot, dr, cold = tmp_path / "hot", tmp_path / "dr", tmp_path / "cold"
    for location in (hot, dr, cold):
        init(location)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("aging")
    point = backup(hot, data)

    copied = ok("copy", "--from", hot, "--to", dr, "--json").json()["copied"]
    ok("copy", "--from", hot, "--to", dr, "--json")  # nothing left to copy: no event
    time.sleep(1.1)
    moved = ok(
        "lifecycle", "run", "--vault", hot, "--cold-vault", cold, "--cold-after", "1s", "--json"
    ).json()["move"]

    all_events = ok("audit", "list", "--json").json()
    made, events = [(e["action"], e["subject"]) for e in all_events[:3]], all_events[3:]
    assert made == [("vault.init", str(location)) for location in (hot, dr, cold)]
    assert [e["action"] for e in events] == ["backup", "copy", "lifecycle"]
    copy_id = copied[0]["destination"]
    assert events[1]["details"] == {
        "from": str(hot),
        "to": str(dr),
        "copied": [copy_id],
        "count": 1,
    }
    assert events[2]["details"]["moved"] == 1
    assert events[2]["details"]["forgotten"] == {"hot": 1, "cold": 0}
    assert (held(hot), held(dr), held(cold)) == ([], [copy_id], [moved[0]["cold_point"]])
    assert moved[0]["point"] == point
    for location, seqs in ((hot, [1, 4, 5, 6]), (dr, [2, 5]), (cold, [3, 6])):
        assert sorted(r["seq"] for r in vault_trail(location) if "seq" in r) == seqs
    ok("audit", "verify")


def test_vault_init_records_the_vaults_lock_settings(tmp_path: Path) -> None:
    location = tmp_path / "vault"
    made = ok(
        "vault", "init", "--vault", location, *FAST_KDF,
        "--lock", "governance", "--min-retention", "2d", "--json",
    ).json()  # fmt: skip

    events = ok("audit", "list", "--json").json()
    assert [(e["action"], e["subject"]) for e in events] == [("vault.init", str(location))]
    assert events[0]["details"] == {
        "id": made["id"],
        "region": made["region"],
        "lock": "governance",
        "min_retention_s": 2 * 86400,
        "max_retention_s": None,
        "ids_from": None,
    }
    (record,) = [r for r in vault_trail(location) if "seq" in r]
    assert (record["action"], record["hash"]) == ("vault.init", events[0]["hash"])
