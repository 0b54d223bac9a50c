"""A second backup must not read what has not changed, and a third must read only what has.

The JSON counters are reprieve's own account; the kernel's count of bytes the process read
(``rchar`` in /proc/<pid>/io, which covers every thread) is the independent one.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import PASSWORD, ok
from support import digests, random_file, restored_at, text_file

MiB = 1 << 20

# Runs reprieve's entry point in this process and, however it exits, writes the process's
# rchar to the file named by the first argument (main ends a finished command with the
# exit handlers only, not a full interpreter teardown).
MEASURED_MAIN = """
import atexit, sys
out = sys.argv.pop(1)

def count():
    with open("/proc/self/io") as io, open(out, "w") as f:
        f.write(next(line.split()[1] for line in io if line.startswith("rchar:")))

atexit.register(count)
from reprieve.cli.main import main
main()
"""


def measured(tmp_path: Path, *args: str | Path) -> tuple[Any, int]:
    """Run a `reprieve ... --json` command; its JSON output and the bytes it read."""
    counter = tmp_path / "rchar"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRIEVE_")}
    env["REPRIEVE_PASSWORD"] = PASSWORD
    proc = subprocess.run(
        [sys.executable, "-c", MEASURED_MAIN, str(counter), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    return json.loads(out) if out.lstrip().startswith(("{", "[")) else out, int(counter.read_text())


def make_dataset(root: Path) -> int:
    """About 50 MiB in large, medium, and small files; returns the total size."""
    rng = random.Random(7)
    for i in range(4):
        random_file(root / "large" / f"blob{i}.bin", rng, 8 * MiB + i)
    for i in range(12):
        text_file(root / "logs" / f"app{i}.log", rng, MiB + 1000 * i)
    for i in range(400):
        random_file(root / "small" / f"s{i % 20}" / f"f{i}.dat", rng, rng.randrange(0, 16_000))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def backup(tmp_path: Path, vault: str, source: Path, resource: str) -> tuple[dict[str, Any], int]:
    return measured(
        tmp_path, "backup", "files", source, "--vault", vault, "--resource", resource, "--json"
    )


def test_unchanged_rebackup_adds_almost_nothing_and_reads_no_file_contents(
    tmp_path: Path, vault: str
) -> None:
    source = tmp_path / "data"
    size = make_dataset(source)
    assert size >= 45 * MiB

    first, first_rchar = backup(tmp_path, vault, source, "app")
    assert first["bytes_read"] == size
    assert first_rchar >= size

    second, second_rchar = backup(tmp_path, vault, source, "app")
    assert second["parent"] == first["point"]
    assert second["files_read"] == 0
    assert second["bytes_read"] == 0
    assert second["files_unchanged"] == second["files"] == first["files"]
    # Reading moved atimes, which trees do not record, so every walked folder's tree
    # is unchanged. Only the folders above the source may differ (this test writes
    # files beside the source between backups, which moves their mtime).
    assert second["blobs_added"] <= len(source.parts)
    assert second["bytes_added"] < 64 * 1024
    # Starting Python and importing reprieve reads ~4 MB of modules (~10 MB on S3, where
    # boto3 loads its service data), and recording the point in the catalog ~10 MB more
    # (SQLAlchemy); measure both with commands that touch no source file (each pays the
    # shared start-up, counted once), and allow the second backup little beyond them.
    _, vault_rchar = measured(tmp_path, "points", "list", "--vault", vault, "--json")
    _, catalog_rchar = measured(tmp_path, "audit", "list", "--json")
    _, shared_rchar = measured(tmp_path, "--version")
    baseline_rchar = vault_rchar + catalog_rchar - shared_rchar
    extra = second_rchar - baseline_rchar
    assert vault_rchar < size // 4, f"start-up alone read {vault_rchar} bytes"
    assert catalog_rchar - shared_rchar < size // 4, "opening the catalog read too much"
    assert extra < size // 50, f"read {extra} bytes beyond start-up of a {size}-byte dataset"

    rewritten = source / "logs" / "app3.log"
    old = rewritten.read_bytes()
    rewritten.write_bytes(bytes(b ^ 0xFF for b in old[:4096]) + old[4096:])
    stamp = rewritten.stat().st_mtime_ns + 1_000_000_000
    os.utime(rewritten, ns=(stamp, stamp))
    assert rewritten.stat().st_size == len(old)
    with open(source / "large" / "blob2.bin", "ab") as f:
        f.write(b"appended tail\n")

    third, _ = backup(tmp_path, vault, source, "app")
    assert third["parent"] == second["point"]
    assert third["files_read"] == 2
    assert third["bytes_read"] == len(old) + (8 * MiB + 2 + 14)
    assert third["files_unchanged"] == third["files"] - 2

    target = tmp_path / "restore"
    ok("restore", third["point"], "--vault", vault, "--target", target)
    assert digests(restored_at(target, source)) == digests(source)


def test_backup_of_a_new_resource_does_not_take_another_resources_point_as_parent(
    tmp_path: Path, vault: str
) -> None:
    source = tmp_path / "shared"
    rng = random.Random(3)
    for i in range(5):
        random_file(source / f"f{i}", rng, 300_000)

    first = ok("backup", "files", source, "--vault", vault, "--resource", "alpha", "--json").json()
    other = ok("backup", "files", source, "--vault", vault, "--resource", "beta", "--json").json()
    again = ok("backup", "files", source, "--vault", vault, "--resource", "alpha", "--json").json()

    assert first["parent"] is None
    assert other["parent"] is None
    # Without a parent every file is read again (its blobs still dedupe against alpha's).
    assert other["files_read"] == 5
    assert other["files_unchanged"] == 0
    assert again["parent"] == first["point"]
    assert again["files_read"] == 0
    shown = ok("points", "show", other["point"], "--vault", vault, "--json").json()
    assert shown["parent"] is None
