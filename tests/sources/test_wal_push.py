"""`wal push` / `wal fetch` / `wal ship` and the bounded spool, without a database.

archive_command hands over finished WAL files by path; these tests hand over
files of random bytes under WAL names, which is all the commands look at.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import FAST_KDF, ok, run_cli

from reprieve.sources import walhelper

SEGMENTS = [f"00000001000000000000000{i}" for i in range(1, 6)]


def _wal(folder: Path, name: str, size: int = 64 * 1024) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def _push(
    vault: Path, spool: Path, path: Path, limit: str = "1GiB"
) -> subprocess.CompletedProcess[str]:
    result = run_cli(
        "wal", "push", path, "--resource", "db", "--vault", vault,
        "--spool", spool, "--spool-max", limit,
    )  # fmt: skip
    return subprocess.CompletedProcess([], result.code, result.stdout, result.stderr)


def test_push_then_fetch_returns_the_same_bytes(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    path = _wal(tmp_path / "pg_wal", SEGMENTS[0])

    assert _push(vault, tmp_path / "spool", path).returncode == 0
    out = tmp_path / "restored"
    ok("wal", "fetch", SEGMENTS[0], out, "--resource", "db", "--vault", vault)

    assert out.read_bytes() == path.read_bytes()
    # Stored encrypted: the vault's object does not contain the plain bytes.
    stored = (vault / "logs" / "db" / SEGMENTS[0]).read_bytes()
    assert path.read_bytes()[:4096] not in stored
    missing = run_cli("wal", "fetch", SEGMENTS[1], out, "--resource", "db", "--vault", vault)
    assert missing.code == 5


def test_unreachable_vault_spools_and_the_next_push_sends_the_spool_first(
    tmp_path: Path,
) -> None:
    vault, spool = tmp_path / "vault", tmp_path / "spool"
    first = _wal(tmp_path / "pg_wal", SEGMENTS[0])

    down = _push(vault, spool, first)  # no vault there yet: as if unreachable

    assert down.returncode == 0  # PostgreSQL may recycle its copy: the spool has it
    assert "spooled" in down.stderr and down.stderr.count("\n") == 1
    assert (spool / SEGMENTS[0]).read_bytes() == first.read_bytes()

    ok("vault", "init", "--vault", vault, *FAST_KDF)
    second = _wal(tmp_path / "pg_wal", SEGMENTS[1])
    assert _push(vault, spool, second).returncode == 0

    assert not list(spool.glob("0000*"))
    listed = ok("wal", "list", "--resource", "db", "--vault", vault, "--json").json()
    assert [row["name"] for row in listed] == SEGMENTS[:2]


def test_a_full_spool_drops_the_file_and_records_it_instead_of_filling_the_disk(
    tmp_path: Path,
) -> None:
    vault, spool = tmp_path / "vault", tmp_path / "spool"
    sizes = []
    for name in SEGMENTS[:3]:
        result = _push(vault, spool, _wal(tmp_path / "pg_wal", name), limit="150KiB")
        assert result.returncode == 0
        sizes.append(sum(p.stat().st_size for p in spool.glob("0000*")))

    assert sizes == [64 * 1024, 128 * 1024, 128 * 1024]
    dropped = [json.loads(line) for line in (spool / "dropped.jsonl").read_text().splitlines()]
    assert [d["file"] for d in dropped] == [SEGMENTS[2]]
    assert "spool full" in dropped[0]["reason"]


def test_ship_sends_what_the_helper_spooled(tmp_path: Path) -> None:
    vault, spool = tmp_path / "vault", tmp_path / "spool"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    paths = [_wal(tmp_path / "pg_wal", name) for name in SEGMENTS[:3]]
    for path in paths:
        assert walhelper.main(["push", str(path), str(spool), str(1 << 30)]) == 0

    shipped = ok("wal", "ship", "--resource", "db", "--vault", vault, "--spool", spool)

    assert "shipped 3" in shipped.stdout
    assert not list(spool.glob("0000*"))
    for path in paths:
        out = tmp_path / f"{path.name}.back"
        ok("wal", "fetch", path.name, out, "--resource", "db", "--vault", vault)
        assert out.read_bytes() == path.read_bytes()


def test_the_helper_drops_past_its_bound(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for name in SEGMENTS[:2]:
        assert walhelper.main(["push", str(_wal(tmp_path / "w", name)), str(spool), "100000"]) == 0

    assert [p.name for p in spool.glob("0000*")] == [SEGMENTS[0]]
    (record,) = (spool / "dropped.jsonl").read_text().splitlines()
    assert json.loads(record)["file"] == SEGMENTS[1]


def test_a_promoted_servers_partial_segment_is_archived(tmp_path: Path) -> None:
    vault, spool = tmp_path / "vault", tmp_path / "spool"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    path = _wal(tmp_path / "pg_wal", f"{SEGMENTS[2]}.partial")

    assert _push(vault, spool, path).returncode == 0

    assert (vault / "logs" / "db" / path.name).exists()


def test_pushing_other_bytes_under_an_archived_name_is_refused(tmp_path: Path) -> None:
    vault, spool = tmp_path / "vault", tmp_path / "spool"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    path = _wal(tmp_path / "pg_wal", SEGMENTS[0])
    assert _push(vault, spool, path).returncode == 0
    assert _push(vault, spool, path).returncode == 0  # a retry of the same file is fine

    path.write_bytes(os.urandom(1000))
    refused = _push(vault, spool, path)

    assert refused.returncode == 7
    assert "refusing to overwrite archived WAL" in refused.stderr
    assert not list(spool.glob("0000*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to-time", "yesterday"], "is not a time like"),
        (["--to-lsn", "zz"], "is not an LSN like"),
        (["--to-xid", "abc"], "--to-xid needs a transaction id"),
        (["--latest", "--to-xid", "5"], "give exactly one of"),
    ],
)
def test_a_malformed_restore_target_is_a_usage_error_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    vault = tmp_path / "vault"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    target = tmp_path / "restored"

    bad = run_cli(
        "restore", "postgres", "--resource", "db", "--vault", vault, "--target", target, *args
    )

    assert bad.code == 2
    assert message in bad.stderr and bad.stderr.count("\n") == 1
    assert not target.exists()
