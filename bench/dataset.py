"""A seeded, deterministic benchmark dataset and the 2% change applied between backups.

At the default 2 GiB the tree holds, by bytes:

- ``logs/``: about 40% log-like text (JSON lines and CSV), 64 KiB to 64 MiB per file,
  compressing about 4x with zstd;
- ``blobs/``: about 35% incompressible random bytes, 100 KiB to 200 MiB per file;
- ``small/``: 20,000 files of 0.5-8 KiB (85% text) spread over about 1,000 nested folders;
- ``copies/``: the rest, near-duplicates of large files with a few small edits each.

Other sizes scale every budget, the largest file sizes, and the small-file count in
proportion. The plan is drawn from ``random.Random(f"{seed}/plan")`` and every file's bytes
from a generator seeded with its own path, so files are written in parallel by worker
processes and still come out identical for the same seed and size.
"""

from __future__ import annotations

import enum
import math
import os
import random
import re
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.textgen import TextFormat, TextStream, write_random, write_text

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
FULL_SCALE = 2 * GiB
SMALL_FILES_AT_FULL_SCALE = 20_000

TEXT_SHARE = 0.40
RANDOM_SHARE = 0.35
_SMALL_TEXT_SHARE = 0.85
_FILES_PER_SMALL_DIR = 20


class Kind(enum.Enum):
    JSONL = "jsonl"
    CSV = "csv"
    RANDOM = "bin"

    @classmethod
    def of(cls, path: Path) -> Kind:
        return {".jsonl": cls.JSONL, ".csv": cls.CSV, ".txt": cls.CSV}.get(path.suffix, cls.RANDOM)


@dataclass(frozen=True)
class FileSpec:
    rel: str
    kind: Kind
    size: int


@dataclass(frozen=True)
class CopySpec:
    rel: str
    source: str
    size: int
    edits: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    files: int
    total_bytes: int
    bytes_by_part: dict[str, int]


def parse_size(text: str) -> int:
    """``"2G"``, ``"300M"``, ``"1.5GiB"``, ``"512k"`` or a plain byte count; binary units."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 2G, 300M)")
    number, unit = match.groups()
    scale = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}[unit.lower()]
    return int(float(number) * scale)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _fill(rng: random.Random, budget: int, low: int, high: int, first: int | None) -> list[int]:
    """File sizes adding up to ``budget``: ``first`` (if any), then log-uniform picks."""
    sizes: list[int] = []
    left = budget
    if first is not None and first <= left:
        sizes.append(first)
        left -= first
    while left >= low:
        size = min(_log_uniform(rng, low, high), left)
        if left - size < low:
            size = left
        sizes.append(size)
        left -= size
    if left and sizes:
        sizes[-1] += left
    return sizes


def small_file_count(total: int) -> int:
    return max(50, round(SMALL_FILES_AT_FULL_SCALE * total / FULL_SCALE))


def small_file_path(index: int, suffix: str) -> str:
    leaf = index // _FILES_PER_SMALL_DIR
    parts = ["small", f"d{leaf % 40:02d}", f"e{leaf // 40:03d}"]
    if leaf % 7 == 0:
        parts.append("deep")
    return "/".join([*parts, f"f{index:05d}{suffix}"])


def plan(total: int, seed: int) -> tuple[list[FileSpec], list[CopySpec]]:
    rng = random.Random(f"{seed}/plan")
    scale = total / FULL_SCALE
    files: list[FileSpec] = []

    text_max = max(MiB, int(64 * MiB * scale))
    for i, size in enumerate(_fill(rng, int(total * TEXT_SHARE), 64 * KiB, text_max, None)):
        kind = Kind.JSONL if i % 2 == 0 else Kind.CSV
        files.append(FileSpec(f"logs/svc{i % 8}/part-{i:04d}.{kind.value}", kind, size))

    blob_max = max(MiB, int(200 * MiB * scale))
    for i, size in enumerate(
        _fill(rng, int(total * RANDOM_SHARE), 100 * KiB, blob_max, first=blob_max)
    ):
        files.append(FileSpec(f"blobs/g{i % 5}/blob-{i:04d}.bin", Kind.RANDOM, size))

    for i in range(small_file_count(total)):
        text = rng.random() < _SMALL_TEXT_SHARE
        kind = Kind.CSV if text else Kind.RANDOM
        size = rng.randint(KiB // 2, 8 * KiB)
        files.append(FileSpec(small_file_path(i, ".txt" if text else ".bin"), kind, size))

    copies: list[CopySpec] = []
    left = total - sum(f.size for f in files)
    large = [f for f in files if f.size >= MiB]
    for round_no in range(3):
        for source in rng.sample(large, len(large)):
            if source.size > left:
                continue
            name = Path(source.rel)
            rel = f"copies/r{round_no}/{name.parent.name}-{name.stem}-copy{name.suffix}"
            edits = tuple(
                (rng.randrange(source.size - 4 * KiB), rng.randint(1, 4 * KiB))
                for _ in range(rng.randint(2, 5))
            )
            copies.append(CopySpec(rel, source.rel, source.size, edits))
            left -= source.size
    return files, copies


def _file_rng(seed: int, rel: str) -> random.Random:
    return random.Random(f"{seed}/file/{rel}")


def _text_stream(seed: int, kind: Kind, rng: random.Random) -> TextStream:
    fmt = TextFormat.JSONL if kind is Kind.JSONL else TextFormat.CSV
    return TextStream(str(seed), fmt, rng)


def _write_file(root: Path, seed: int, spec: FileSpec) -> None:
    path = root / spec.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = _file_rng(seed, spec.rel)
    with path.open("wb") as out:
        if spec.kind is Kind.RANDOM:
            write_random(out, rng, spec.size)
        else:
            write_text(out, _text_stream(seed, spec.kind, rng), spec.size)


def _write_files(root: Path, seed: int, specs: list[FileSpec]) -> None:
    for spec in specs:
        _write_file(root, seed, spec)


def _write_copy(root: Path, seed: int, spec: CopySpec) -> None:
    path = root / spec.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / spec.source, path)
    rng = _file_rng(seed, spec.rel)
    with path.open("r+b") as out:
        for offset, length in spec.edits:
            out.seek(offset)
            out.write(rng.randbytes(length))


def _batches(specs: list[FileSpec], count: int) -> Iterable[list[FileSpec]]:
    """Split into ``count`` lists of similar byte totals, largest files first."""
    batches: list[list[FileSpec]] = [[] for _ in range(count)]
    loads = [0] * count
    for spec in sorted(specs, key=lambda s: s.size, reverse=True):
        slot = loads.index(min(loads))
        batches[slot].append(spec)
        loads[slot] += spec.size
    return [b for b in batches if b]


def generate(root: Path, total: int = FULL_SCALE, seed: int = 1, workers: int = 0) -> DatasetInfo:
    """Write the dataset into the empty (or missing) folder ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"dataset folder is not empty: {root}")
    files, copies = plan(total, seed)
    jobs = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for done in [pool.submit(_write_files, root, seed, b) for b in _batches(files, jobs * 4)]:
            done.result()
        for done in [pool.submit(_write_copy, root, seed, c) for c in copies]:
            done.result()
    parts: dict[str, int] = {}
    for rel, size in [(f.rel, f.size) for f in files] + [(c.rel, c.size) for c in copies]:
        top = rel.split("/", 1)[0]
        parts[top] = parts.get(top, 0) + size
    return DatasetInfo(root, len(files) + len(copies), sum(parts.values()), parts)


def _inventory(root: Path) -> list[tuple[Path, int]]:
    found: list[tuple[Path, int]] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder, name)
            found.append((path, path.stat().st_size))
    return found


def _new_content(path: Path, rng: random.Random, seed: int, size: int) -> bytes:
    kind = Kind.of(path)
    if kind is Kind.RANDOM:
        return rng.randbytes(size)
    return _text_stream(seed, kind, rng).take(size)


def mutate(root: Path, fraction: float = 0.02, seed: int = 1) -> int:
    """Change about ``fraction`` of the dataset's bytes; return the bytes written.

    About half the budget rewrites regions inside large files, a quarter is appended to
    large files (logs grow), about 2% of the small files are rewritten, and the rest goes
    into a few new files. Text files get text and binary files random bytes, so the
    compressibility of the tree does not drift.
    """
    rng = random.Random(f"{seed}/mutate")
    inventory = _inventory(root)
    total = sum(size for _, size in inventory)
    budget = int(total * fraction)
    large = [(p, s) for p, s in inventory if s >= MiB]
    small = [p for p, s in inventory if p.is_relative_to(root / "small")]
    changed = 0

    region_budget = budget // 2
    for path, size in rng.sample(large, len(large)):
        if changed >= region_budget:
            break
        with path.open("r+b") as out:
            for _ in range(rng.randint(1, 3)):
                length = min(rng.randint(16 * KiB, MiB), size // 4, region_budget - changed)
                if length <= 0:
                    break
                out.seek(rng.randrange(size - length))
                out.write(_new_content(path, rng, seed, length))
                changed += length

    append_budget = changed + budget // 4
    for path, _ in rng.sample(large, len(large)):
        if changed >= append_budget:
            break
        length = min(rng.randint(64 * KiB, 4 * MiB), append_budget - changed)
        with path.open("ab") as out:
            out.write(_new_content(path, rng, seed, length))
        changed += length

    for path in rng.sample(small, math.ceil(len(small) * 0.02)):
        content = _new_content(path, rng, seed, rng.randint(KiB // 2, 8 * KiB))
        path.write_bytes(content)
        changed += len(content)

    new_dir = root / f"new-{seed}"
    new_dir.mkdir(exist_ok=True)
    left = max(budget - changed, 3 * KiB)
    for i, suffix in enumerate((".jsonl", ".bin", ".csv")):
        length = left // (3 - i)
        path = new_dir / f"added-{i}{suffix}"
        path.write_bytes(_new_content(path, rng, seed, length))
        changed += length
        left -= length
    return changed
