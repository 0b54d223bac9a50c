"""Ctrl-C during a backup: exit 130, one line on stderr, and a vault that needs no repair.

Unlike SIGKILL (test_kill.py), SIGINT lets the process unwind: the blob writer's
pools shut down, the lock is released, and the single top-level handler prints
one line. What was written before the interrupt is unreferenced and harmless.
It runs on a folder and on S3, where the interrupt may land in an upload.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST_KDF, PASSWORD, Result, ok
from stores import VaultStore, copy_vault, remove_vault
from support import digests, one_line, random_file, restored_at, text_file

MiB = 1024 * 1024
# Measured from the moment the backup holds its lock. On a fast machine the whole
# 80 MiB backup takes a few tenths of a second, so a fixed delay from process start
# would often land in interpreter start-up or after the point is saved; when the
# backup still finishes first, the next attempt interrupts sooner.
DELAYS = (0.1, 0.05, 0.02)


def _dataset(source: Path) -> None:
    """About 80 MiB: incompressible files, log-like text, and small files."""
    rng = random.Random(130)
    for i in range(8):
        random_file(source / "random" / f"r{i}.bin", rng, 5 * MiB + rng.randrange(MiB))
    for i in range(4):
        text_file(source / "logs" / f"app{i}.log", rng, 9 * MiB)
    for i in range(40):
        random_file(source / "small" / f"f{i}.dat", rng, rng.randrange(1, 40_000))


def _lock_held(vault: VaultStore) -> bool:
    # A folder's `.tmp-*` file is a lock still being written, not a lock.
    return any(not n.startswith("locks/.tmp-") for n in vault.names("locks/"))


def _interrupted_backup(source: Path, vault: str, delay: float) -> Result:
    """Start a backup, send SIGINT ``delay`` seconds after it has taken its lock."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRIEVE_")}
    env["REPRIEVE_PASSWORD"] = PASSWORD
    args = ("backup", "files", str(source), "--vault", vault, "--resource", "app")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprieve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    store = VaultStore.at(vault)
    deadline = time.monotonic() + 60
    while not _lock_held(store) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return Result(proc.returncode, "", stderr)


def _points(vault: str) -> list[str]:
    return [p["id"] for p in ok("points", "list", "--vault", vault, "--json").json()]


def test_ctrl_c_during_backup_exits_130_with_one_line_and_a_consistent_vault(
    vault_base: str, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    _dataset(source)
    empty = f"{vault_base}/empty-vault"
    ok("vault", "init", "--vault", empty, *FAST_KDF)
    vault = f"{vault_base}/vault"

    outcomes: list[str] = []
    for delay in DELAYS:
        copy_vault(empty, vault)
        result = _interrupted_backup(source, vault, delay)
        outcomes.append(f"{delay}s: exit {result.code}, {len(_points(vault))} point(s)")
        # Exit 130 after the point was saved is correct too, but not the case under test.
        if result.code == 130 and not _points(vault):
            break
        assert result.code in (0, 130), f"{outcomes[-1]}: {result.stderr}"
        remove_vault(vault)
    else:
        pytest.fail(f"no attempt interrupted the backup midway: {outcomes}")

    assert "interrupted" in one_line(result)
    assert not _lock_held(VaultStore.at(vault)), "the interrupted backup left its lock behind"
    check = ok("check", "--vault", vault, "--read-data", "--json").json()
    assert check["ok"] is True

    point = ok("backup", "files", source, "--vault", vault, "--resource", "app", "--json")
    target = tmp_path / "restore"
    ok("restore", point.json()["point"], "--vault", vault, "--target", target)
    assert digests(restored_at(target, source)) == digests(source)
