"""Helpers for the end-to-end tests: datasets, digests, and processes to kill."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

from conftest import PASSWORD, Result

WORDS = (
    b"alpha beta gamma delta epsilon tenant invoice ledger claim audit region vault "
    b"INFO WARN ERROR request=ok latency_ms user_id order_id 2024-05-01T12:00:00Z"
).split()


def start_cli(*args: str | Path) -> subprocess.Popen[bytes]:
    """Start `reprieve` as `run_cli` does, but without waiting, so that a test can kill it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRIEVE_")}
    env["REPRIEVE_PASSWORD"] = PASSWORD
    return subprocess.Popen(
        [sys.executable, "-m", "reprieve", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def random_file(path: Path, rng: random.Random, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.randbytes(size))


def text_file(path: Path, rng: random.Random, size: int) -> None:
    """Log-like text: compresses well, but is not one repeated block."""
    lines = [b" ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + b"\n" for _ in range(2048)]
    out = bytearray()
    while len(out) < size:
        out += b"".join(rng.choices(lines, k=4096))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out[:size]))


def digests(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by SHA-256 of their bytes, folders as "dir"."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            found[str((base / name).relative_to(root))] = "dir"
        for name in filenames:
            path = base / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def restored_at(target: Path, source: Path) -> Path:
    """Where restore puts ``source``: its absolute path, under the target."""
    return target / source.absolute().relative_to(source.absolute().anchor)


def one_line(result: Result) -> str:
    """The single line a failing command must print on stderr."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    return lines[0]
