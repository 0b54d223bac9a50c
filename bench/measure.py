"""Measuring one command, and the file-tree helpers the steps share.

A step's command runs under ``spawn.py``, a small launcher that times it and reaps it with
``os.wait4`` (see there for why it is a separate process); output goes to files, since a
pipe could fill and stall the command. ``ru_maxrss`` is the peak resident set in KiB of the
command or of any descendant it reaped, so for a tool that forks workers it is the largest
single process, not the sum. restic and borg run as one process; the figure is exact for
them, above a floor of the launcher's own few MiB. The machine-wide CPU time used during the
step, minus the step's own, shows whether something else competed for the cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_SPAWN = Path(__file__).resolve().parent / "spawn.py"
_READ_BLOCK = 1024 * 1024
_STDERR_TAIL = 2000


class BenchError(Exception):
    """A step failed or its result is wrong; the message is one line for the user."""


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float
    peak_rss_kib: int
    other_cpu_seconds: float
    stdout: str


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used since boot (``/proc/stat``); 0 if unavailable."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not work.
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
) -> Measured:
    """Run ``cmd`` to completion; stderr goes to ``log``. Raise BenchError unless it exits 0."""
    log.parent.mkdir(parents=True, exist_ok=True)
    usage_file = log.with_suffix(".usage.json")
    usage_file.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", str(_SPAWN), str(usage_file)]
    with tempfile.TemporaryFile() as out, log.open("wb") as err:
        busy_before = machine_busy_seconds()
        code = subprocess.call(
            [*launcher, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env),
            cwd=cwd,
        )
        busy = machine_busy_seconds() - busy_before
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if code != 0 or not usage_file.exists():
        tail = log.read_text(errors="replace")[-_STDERR_TAIL:].strip().replace("\n", " | ")
        raise BenchError(f"{' '.join(cmd)} exited with {code} (stderr in {log}): {tail or stdout}")
    usage = json.loads(usage_file.read_text())
    cpu_seconds = float(usage["user_seconds"]) + float(usage["system_seconds"])
    return Measured(
        seconds=float(usage["seconds"]),
        cpu_seconds=cpu_seconds,
        peak_rss_kib=int(usage["max_rss_kib"]),
        # Kernel threads flushing this step's writes count here too, so a little is normal.
        other_cpu_seconds=max(0.0, busy - cpu_seconds),
        stdout=stdout,
    )


def files_under(root: Path) -> list[Path]:
    """Every regular file under ``root`` as a path relative to it, sorted."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        base = Path(folder).relative_to(root)
        found.extend(base / name for name in sorted(names))
    return found


def tree_bytes(root: Path) -> int:
    """Apparent size of everything under ``root`` (sum of file sizes, links not followed)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def warm_cache(root: Path) -> int:
    """Read every file once so the timed step starts with a warm page cache."""
    buf = bytearray(_READ_BLOCK)
    total = 0
    for rel in files_under(root):
        with (root / rel).open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def _same_content(a: Path, b: Path) -> bool:
    with a.open("rb", buffering=0) as fa, b.open("rb", buffering=0) as fb:
        while True:
            block_a = fa.read(_READ_BLOCK)
            block_b = fb.read(_READ_BLOCK)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def verify_tree(source: Path, restored: Path) -> int:
    """Compare two trees file by file; return the file count or raise BenchError."""
    if not restored.is_dir():
        raise BenchError(f"restore produced no data folder at {restored}")
    want, got = files_under(source), files_under(restored)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise BenchError(
            f"restored tree differs from {source}: {len(missing)} missing "
            f"(e.g. {[str(p) for p in missing[:3]]}), {len(extra)} unexpected "
            f"(e.g. {[str(p) for p in extra[:3]]})"
        )
    differing = [rel for rel in want if not _same_content(source / rel, restored / rel)]
    if differing:
        raise BenchError(
            f"{len(differing)} restored files differ from the source, "
            f"e.g. {[str(p) for p in differing[:3]]}"
        )
    return len(want)
