"""The restore job for the files source."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reprieve.engine.progress import Progress
from reprieve.errors import UsageError
from reprieve.sources.files_restore import Restorer, RestoreStats
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault

# Whole packs kept while restoring (16 MiB each by default): enough for the
# two writer threads and the walk to work in different packs at once.
RESTORE_PACK_CACHE = 6


def restore_files(
    vault: Vault,
    point: Point,
    target: Path,
    includes: Sequence[str] = (),
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RestoreStats:
    if point.kind != "files":
        raise UsageError(f"point {point.short_id} is a {point.kind} point, not files")
    if progress is not None:
        progress.start("restore", int(point.stats.get("bytes", 0)))
    vault.cache_packs(RESTORE_PACK_CACHE)
    try:
        with VaultLock(vault.backend, LockKind.SHARED, "restore"):
            return Restorer(vault, target, includes, overwrite, progress).run(point.tree)
    finally:
        if progress is not None:
            progress.finish()
