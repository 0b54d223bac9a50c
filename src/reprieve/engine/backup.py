"""The backup job for the files source.

A backup job takes the vault's shared lock, finds the resource's newest
point as the parent (so unchanged files are not read), streams the paths
through the blob writer, writes the index, and saves the point last.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reprieve.engine.progress import Progress
from reprieve.errors import UsageError
from reprieve.sources.files import BackupStats, backup_paths
from reprieve.vault.immutability import lock_point_data, retain_until
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault
from reprieve.vault.writer import BlobWriter, WriteStats

INDEX_EVERY_PACKS = 8
TREE_PACK_CACHE = 4


@dataclass
class BackupResult:
    point: Point
    stats: BackupStats
    written: WriteStats
    duration_s: float

    def summary(self) -> dict[str, object]:
        return {
            "point": self.point.id,
            "resource": self.point.resource,
            "time": self.point.summary()["time"],
            "files": self.stats.files,
            "dirs": self.stats.dirs,
            "bytes": self.stats.bytes,
            "files_read": self.stats.files_read,
            "files_unchanged": self.stats.files_unchanged,
            "skipped": self.stats.skipped,
            "bytes_read": self.stats.bytes_read,
            "bytes_added": self.point.stats["bytes_added"],
            "blobs_added": self.written.blobs_new,
            "errors": self.stats.errors,
            "duration_s": round(self.duration_s, 3),
            "parent": self.point.parent,
            "retain_until": self.point.summary()["retain_until"],
        }


RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_resource_name(resource: str) -> None:
    if not RESOURCE_NAME.fullmatch(resource):
        raise UsageError(
            f"invalid resource name {resource!r}; use letters, digits, '.', '-' and '_'"
        )


def backup_files(
    vault: Vault,
    paths: Sequence[str],
    resource: str,
    tags: dict[str, str],
    excludes: Sequence[str] = (),
    progress: Progress | None = None,
    force_unlock: bool = False,
    retain: timedelta | None = None,
) -> BackupResult:
    check_resource_name(resource)
    started = time.monotonic()
    now = datetime.now(UTC)
    until = retain_until(vault, now, retain)  # checked before any work
    # The parent's folder listings are read whole-pack at a time: on S3, one
    # request per tree pack rather than one per folder.
    vault.cache_packs(TREE_PACK_CACHE)
    with VaultLock(vault.backend, LockKind.SHARED, "backup", force_unlock):
        previous = [p for p in vault.points(resource) if p.kind == "files"]
        parent = previous[-1] if previous else None
        # Indexed every few packs, so that a failed or killed backup leaves
        # data the next run finds instead of sending again.
        with BlobWriter(vault, index_every=INDEX_EVERY_PACKS) as writer:
            tree, stats = backup_paths(
                vault, writer, paths, parent.tree if parent else None, excludes, progress
            )
            writer.flush()
        point = Point(
            resource=resource,
            kind="files",
            time=now,
            tree=tree,
            tags=tags,
            paths=[os.path.abspath(p) for p in paths],
            host=socket.gethostname(),
            parent=parent.id if parent else None,
            stats={
                "files": stats.files,
                "dirs": stats.dirs,
                "bytes": stats.bytes,
                "bytes_read": stats.bytes_read,
                "bytes_added": writer.stats.bytes_stored,
                "errors": len(stats.errors),
            },
            # Counted from now: a long backup must not shorten its own lock.
            retain_until=retain_until(vault, datetime.now(UTC), retain) if until else None,
        )
        # Everything the point needs is locked before the point appears.
        lock_point_data(vault, point)
        vault.save_point(point)
    return BackupResult(point, stats, writer.stats, time.monotonic() - started)
