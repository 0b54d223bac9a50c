"""Options every command shares: where the vault is, --debug, --json, and resource names."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_KDF, Result, ok, run_cli
from stores import VaultStore

SECOND_PASSWORD = "a second password for the same vault"


def one_line(result: Result) -> str:
    """The single line a failing command must print on stderr (as in tests/e2e/support.py)."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    return lines[0]


def random_file(path: Path, seed: int, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


def json_document(result: Result) -> Any:
    """The one JSON document a `--json` command must print, and nothing besides."""
    assert result.code == 0, f"exit {result.code}: {result.stderr}"
    assert result.stderr == "", result.stderr
    # json.loads refuses anything after the first document.
    return json.loads(result.stdout)


def test_reprieve_vault_supplies_the_vault_option(vault: str) -> None:
    listed = ok("points", "list", "--json", env={"REPRIEVE_VAULT": vault})
    assert listed.json() == []

    elsewhere = run_cli("points", "list", env={"REPRIEVE_VAULT": f"{vault}-missing"})
    assert elsewhere.code == 5, elsewhere.stderr


def test_missing_vault_names_the_option_and_the_variable() -> None:
    result = run_cli("points", "list")
    assert result.code == 2, result.stderr
    line = one_line(result)
    assert "--vault" in line and "REPRIEVE_VAULT" in line


@pytest.mark.parametrize("how", ["flag at the end", "flag first", "REPRIEVE_DEBUG=1"])
def test_debug_shows_the_traceback_that_is_otherwise_one_line(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "missing"
    args: tuple[str | Path, ...] = ("points", "list", "--vault", missing)
    env: dict[str, str] = {}
    if how == "flag at the end":
        args = (*args, "--debug")
    elif how == "flag first":
        args = ("--debug", *args)
    else:
        env["REPRIEVE_DEBUG"] = "1"

    plain = run_cli("points", "list", "--vault", missing)
    assert plain.code == 5
    assert "no vault at" in one_line(plain)

    debug = run_cli(*args, env=env)
    assert debug.code != 0
    assert "Traceback" in debug.stderr
    assert "VaultNotFound" in debug.stderr


def test_json_of_vault_key_and_restore_commands_is_one_document(tmp_path: Path) -> None:
    location = tmp_path / "vault"
    created = json_document(
        run_cli("vault", "init", "--vault", location, "--region", "eu-1", "--json", *FAST_KDF)
    )
    assert set(created) == {"vault", "id", "region", "lock", "ids_from"}
    assert created["vault"] == str(location) and created["region"] == "eu-1"
    assert created["ids_from"] is None

    source = tmp_path / "data"
    random_file(source / "a.bin", 1, 3000)
    backup = run_cli("backup", "files", source, "--vault", location, "--resource", "r", "--json")
    point = json_document(backup)["point"]

    shown = json_document(run_cli("vault", "show", "--vault", location, "--json"))
    assert set(shown) == {
        "vault",
        "id",
        "region",
        "created",
        "format",
        "points",
        "sizes",
        "bytes",
        "bytes_by_storage_class",
        "lock",
        "lock_enforced_by",
        "min_retention_s",
        "max_retention_s",
        "storage_class",
        "ids_from",
    }
    assert shown["lock"] is None and shown["ids_from"] is None
    assert shown["bytes_by_storage_class"]["LOCAL"] > shown["bytes"]
    assert (shown["id"], shown["points"]) == (created["id"], 1)
    assert shown["bytes"] == sum(shown["sizes"].values()) > 3000

    target = tmp_path / "restore"
    restored = json_document(
        run_cli("restore", point[:12], "--vault", location, "--target", target, "--json")
    )
    assert set(restored) == {"point", "target", "files", "dirs", "bytes"}
    assert (restored["point"], restored["target"]) == (point, str(target))
    assert (restored["files"], restored["bytes"]) == (1, 3000)

    added = json_document(
        run_cli(
            "vault",
            "key",
            "add",
            "--vault",
            location,
            "--json",
            *FAST_KDF,
            env={"REPRIEVE_NEW_PASSWORD": SECOND_PASSWORD},
        )
    )
    assert added == {"added": added["added"], "kind": "passphrase"}

    keys = json_document(run_cli("vault", "key", "list", "--vault", location, "--json"))
    assert [set(k) for k in keys] == [{"id", "kind", "created", "host", "current"}] * 2
    assert added["added"] in {k["id"] for k in keys}
    assert [k["current"] for k in keys].count(True) == 1

    removed = json_document(
        run_cli("vault", "key", "remove", added["added"][:12], "--vault", location, "--json")
    )
    assert removed == {"removed": added["added"]}
    assert run_cli("points", "list", "--vault", location, password=SECOND_PASSWORD).code == 4


@pytest.mark.parametrize("name", ["a b", "../x", ""], ids=["space", "dot-dot", "empty"])
def test_invalid_resource_name_is_refused_before_anything_is_stored(
    vault: str, tmp_path: Path, name: str
) -> None:
    source = tmp_path / "data"
    random_file(source / "a.bin", 2, 3000)

    result = run_cli("backup", "files", source, "--vault", vault, "--resource", name)
    assert result.code == 2, result.stderr
    assert "resource name" in one_line(result)
    stored = VaultStore.at(vault)
    assert not stored.names("points/") and not stored.names("packs/")
