"""A vault on a disk that fills up mid-backup: one clear error, nothing half-stored."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST_KDF, ok, run_cli
from support import digests, one_line, random_file, restored_at, text_file

MIB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs, unmounted again however the test ends."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.strip()
        if "permission denied" in reason.lower() or "not permitted" in reason.lower():
            pytest.skip(f"cannot mount a tmpfs here: {reason}")
        pytest.fail(f"mount failed: {reason}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


# Folder only: a bucket has no disk to fill; S3 refusing writes is test_s3_faults.py's case.
def test_full_disk_during_backup_fails_cleanly_and_vault_stays_consistent(
    small_disk: Path, tmp_path: Path
) -> None:
    rng = random.Random(12)
    vault = small_disk / "vault"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    big = tmp_path / "big"
    for i in range(5):
        random_file(big / f"r{i}.bin", rng, 8 * MIB)

    failed = run_cli("backup", "files", big, "--vault", vault, "--resource", "big")
    assert failed.code == 1, f"exit {failed.code}: {failed.stderr}"
    line = one_line(failed).lower()
    assert "no space left" in line and "internal error" not in line, line
    # Nothing half-written stays behind to hold the space, and no lock is left.
    assert not [p for p in vault.rglob("*") if p.name.startswith(".tmp-")]
    assert not [p for p in vault.glob("locks/*")]

    check = run_cli("check", "--vault", vault, "--read-data")
    assert check.code == 0, f"{check.stdout}{check.stderr}"
    assert ok("points", "list", "--vault", vault, "--json").json() == []

    shutil.rmtree(big)
    small = tmp_path / "small"
    random_file(small / "a.bin", rng, 300_000)
    text_file(small / "notes" / "b.txt", rng, 200_000)
    want = digests(small)
    point = ok("backup", "files", small, "--vault", vault, "--resource", "small", "--json")
    target = tmp_path / "restore"
    ok("restore", point.json()["point"], "--vault", vault, "--target", target)
    assert digests(restored_at(target, small)) == want
