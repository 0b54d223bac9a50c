"""Locks held by other processes: live ones block, dead or abandoned ones do not.

Each lock here is the JSON object another reprieve process would write
(see vault/locks.py), naming a real process: a live `sleep`, or one that
has already exited. Each test runs on a folder and on S3.
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Result, ok, run_cli
from stores import VaultStore
from support import one_line, random_file


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    random_file(folder / "a.bin", random.Random(3), 50_000)
    return folder


def hold_lock(
    vault: str,
    kind: str,
    operation: str,
    pid: int,
    host: str | None = None,
    age: timedelta = timedelta(0),
) -> str:
    """Write the lock object that process ``pid`` on ``host`` would hold; returns its name."""
    lock = f"locks/{secrets.token_hex(16)}"
    body = {
        "kind": kind,
        "operation": operation,
        "host": host or socket.gethostname(),
        "pid": pid,
        "time": (datetime.now(UTC) - age).isoformat(),
    }
    VaultStore.at(vault).write(lock, json.dumps(body).encode())
    return lock


def backup(vault: str, source: Path, *extra: str) -> Result:
    return run_cli("backup", "files", source, "--vault", vault, "--resource", "r", *extra)


def point_count(vault: str) -> int:
    return len(ok("points", "list", "--vault", vault, "--json").json())


def test_live_exclusive_lock_blocks_backup_until_force_unlock(
    vault: str, source: Path, live_pid: int
) -> None:
    store = VaultStore.at(vault)
    lock = hold_lock(vault, "exclusive", "prune", live_pid)

    refused = backup(vault, source)
    assert refused.code == 6, refused.stderr
    line = one_line(refused)
    assert f"pid {live_pid}" in line and "prune" in line and "--force-unlock" in line
    assert store.names("locks/") == [lock], "the refused backup left its lock"
    assert point_count(vault) == 0

    forced = backup(vault, source, "--force-unlock")
    assert forced.code == 0, forced.stderr
    assert point_count(vault) == 1
    assert not store.exists(lock)


def test_lock_of_a_dead_process_is_removed_and_backup_proceeds(
    vault: str, source: Path, dead_pid: int
) -> None:
    lock = hold_lock(vault, "exclusive", "prune", dead_pid)

    done = backup(vault, source)
    assert done.code == 0, done.stderr
    assert not VaultStore.at(vault).exists(lock)
    assert point_count(vault) == 1


def test_live_backup_lock_blocks_prune_but_not_another_backup(
    vault: str, source: Path, live_pid: int
) -> None:
    lock = hold_lock(vault, "shared", "backup", live_pid)

    done = backup(vault, source)
    assert done.code == 0, done.stderr
    for args in (("prune",), ("forget", "--keep-last", "1")):
        refused = run_cli(*args, "--vault", vault)
        assert refused.code == 6, f"{args[0]}: exit {refused.code}: {refused.stderr}"
        assert f"pid {live_pid}" in one_line(refused)
    assert VaultStore.at(vault).exists(lock)
    assert point_count(vault) == 1


def test_lock_from_another_host_blocks_until_it_is_abandoned(
    vault: str, source: Path, live_pid: int
) -> None:
    # The pid cannot be checked on another host, so only the lock's age tells it is abandoned.
    fresh = hold_lock(vault, "exclusive", "prune", live_pid, host="elsewhere", age=timedelta(0))
    refused = backup(vault, source)
    assert refused.code == 6, refused.stderr
    one_line(refused)
    store = VaultStore.at(vault)
    store.delete(fresh)

    abandoned = hold_lock(vault, "exclusive", "prune", live_pid, "elsewhere", timedelta(hours=1))
    done = backup(vault, source)
    assert done.code == 0, done.stderr
    assert not store.exists(abandoned)
