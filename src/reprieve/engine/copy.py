"""Copy recovery points into another vault (another region, other keys).

Each vault has its own keys, so nothing is copied as stored bytes: every
blob is read and authenticated in the source, re-identified with the
destination's id key, and stored (encrypted; compressed as it was) only if
the destination lacks it. Trees are rewritten with the new ids, read back
from the destination (decrypted and re-hashed) with every blob they name
found in its index, and only then is the point saved, recording its origin
(``<source vault id>/<source point>``), which is how a rerun knows what
already arrived.

When the target was made with ``vault init --ids-from`` the source, the two
name equal content alike: blobs keep their ids, the target's index says
which it already holds before anything is read, and the rest move in their
stored (compressed) form, decrypted and re-encrypted under the target's
data key, with nothing decompressed or hashed but the listings.

Resumable: the target's index file is written once the data is stored,
so a copy killed midway leaves packs that no index names. The copy lists
the target's packs before it starts (to refuse an index that names lost
ones) and indexes those strays from their own headers, so a rerun finds
what arrived and sends none of it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reprieve.engine.progress import NullProgress, Progress
from reprieve.errors import DamageError, PointNotFound, UsageError
from reprieve.vault.check import index_stored_packs
from reprieve.vault.immutability import copy_retention, lock_point_data
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.logs import LogStore, copy_logs
from reprieve.vault.packs import BlobType
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault
from reprieve.vault.tree import decode_tree, encode_tree, tree_links
from reprieve.vault.writer import BlobWriter, StoredBlob

# Source packs read at once; each holds at most one pack's bytes.
PACK_READERS = 3
# Whole packs of listings kept in each vault: listings are read one by one.
COPY_PACK_CACHE = 4
# Stored bytes a reader decrypts before sealing them into the target's packs
# in one go (BlobWriter.add_stored).
RUN_BYTES = 1024 * 1024
# Packs stored at once. A copy spends little CPU of its own, so the target
# service's time per upload sets its pace: with three uploads at once rather
# than two, copies of a 1 GiB vault between two local gateways ran 1%, 2%
# and 10% faster in three runs side by side (the benchmark's own runs vary
# more than that from one to the next).
COPY_UPLOADS = 3


@dataclass
class CopyResult:
    copied: list[tuple[str, str]] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    bytes_read: int = 0
    bytes_transferred: int = 0
    lag_before_s: float | None = None
    lag_after_s: float | None = None
    duration_s: float = 0.0
    log_files: int = 0
    log_bytes: int = 0
    packs_resumed: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "points_copied": len(self.copied),
            "copied": [{"source": s, "destination": d} for s, d in self.copied],
            "points_already_present": self.skipped,
            "damaged": [{"source": s, "error": e} for s, e in self.damaged],
            "bytes_read": self.bytes_read,
            "bytes_transferred": self.bytes_transferred,
            "replication_lag_s": self.lag_after_s,
            "replication_lag_before_s": self.lag_before_s,
            "duration_s": round(self.duration_s, 3),
            "wal_files_copied": self.log_files,
            "wal_bytes_copied": self.log_bytes,
            "packs_resumed": self.packs_resumed,
        }


def _lag(missing: Sequence[Point], now: datetime) -> float | None:
    """Age of the newest source point the destination lacks; 0 when none."""
    if not missing:
        return 0.0
    return (now - max(p.time for p in missing)).total_seconds()


class _Copier:
    """Carries points' data into the target, one source pack at a time.

    A point's listings are read first; the data blobs they name are then
    grouped by the source pack that holds them and each pack is fetched
    once (in runs of nearby blobs), whatever order the files were backed up
    in. Listings are rewritten with the new ids last, subfolders first.
    """

    def __init__(self, src: Vault, writer: BlobWriter, progress: Progress) -> None:
        self.src = src
        self.writer = writer
        self.progress = progress
        # The same ids on both sides (see the module's docstring).
        self.same_ids = src.shares_ids(writer.vault)
        # Source id -> target id, for data blobs and for listings.
        self.blobs: dict[bytes, bytes] = {}
        self.trees: dict[bytes, bytes] = {}
        self.bytes_read = 0
        self._lock = threading.Lock()
        # Fetching, decrypting, decompressing and verifying release the GIL:
        # the readers keep the cores busy while the writer's pool re-encrypts.
        self.readers = ThreadPoolExecutor(PACK_READERS, thread_name_prefix="copy-read")

    def point_tree(self, root: bytes) -> bytes:
        """The target id of source listing ``root``, everything under it carried."""
        listings, order, wanted = self._listings(root)
        self._carry(wanted)
        for tree_id in order:
            if self.same_ids:  # names nothing that changes: stored as read (and verified)
                self.trees[tree_id] = self.writer.add(listings[tree_id], BlobType.TREE)
                continue
            nodes = decode_tree(listings[tree_id], f"tree {tree_id.hex()[:12]}")
            for node in nodes:
                if node.subtree is not None:
                    node.subtree = self.trees[node.subtree]
                node.content = [self.blobs[b] for b in node.content]
            self.trees[tree_id] = self.writer.add(encode_tree(nodes), BlobType.TREE)
        return self.trees[root]

    def _listings(self, root: bytes) -> tuple[dict[bytes, bytes], list[bytes], list[bytes]]:
        """Plaintext of every listing not yet carried, an order that has each
        listing after all of its subfolders', and the data blobs they name
        that are not yet carried."""
        listings: dict[bytes, bytes] = {}
        order: list[bytes] = []
        wanted: dict[bytes, None] = {}
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            tree_id, finished = stack.pop()
            if finished:
                order.append(tree_id)
                continue
            if tree_id in listings or tree_id in self.trees:
                continue
            raw = listings[tree_id] = self.src.read_blob(tree_id)
            stack.append((tree_id, True))
            subtrees, content = tree_links(raw, f"tree {tree_id.hex()[:12]}")
            stack.extend((sub, False) for sub in subtrees)
            wanted.update((b, None) for b in content if b not in self.blobs)
        if self.same_ids:  # what the target holds already is neither read nor sent
            held = [b for b in wanted if b in self.writer.vault.index]
            self.blobs.update((b, b) for b in held)
            for b in held:
                del wanted[b]
                self.progress.advance(self.src.locate(b).raw_length)
        return listings, order, list(wanted)

    def _carry(self, wanted: list[bytes]) -> None:
        """Carry ``wanted`` data blobs, each source pack read by one reader."""
        by_pack: dict[str, list[bytes]] = {}
        for blob_id in wanted:
            by_pack.setdefault(self.src.locate(blob_id).pack, []).append(blob_id)
        futures = [self.readers.submit(self._carry_pack, p, ids) for p, ids in by_pack.items()]
        try:
            for future in futures:
                self.blobs.update(future.result())
        finally:
            for future in futures:
                future.cancel()
            wait(futures)

    def _counted(self, raw: int) -> None:
        """Account for ``raw`` bytes of the source carried."""
        self.progress.advance(raw)
        with self._lock:
            self.bytes_read += raw

    def _store_run(self, run: list[StoredBlob]) -> None:
        self.writer.add_stored(run)
        self._counted(sum(raw for *_, raw in run))

    def _carry_pack(self, pack: str, blob_ids: list[bytes]) -> dict[bytes, bytes]:
        """Read, verify, and store the wanted blobs of one pack; runs in the reader pool."""
        if self.same_ids:
            run: list[StoredBlob] = []
            size = 0
            for blob_id, stored, loc in self.src.read_pack_stored(pack, blob_ids):
                run.append((blob_id, loc.type, stored, loc.flags, loc.raw_length))
                size += len(stored)
                if size >= RUN_BYTES:
                    self._store_run(run)
                    run, size = [], 0
            self._store_run(run)
            return {blob_id: blob_id for blob_id in blob_ids}
        # Authenticated by AES-GCM for its id; not hashed again under the
        # source's key, since the target hashes the plaintext under its own.
        carried: dict[bytes, bytes] = {}
        for blob_id, plain, packed in self.src.read_pack_blobs(pack, blob_ids, rehash=False):
            self._counted(len(plain))
            # Stored as the source stored it: compressed form kept, raw not retried.
            carried[blob_id] = self.writer.add(plain, packed=packed, compress=False)
        return carried


def copy_points(
    src: Vault,
    dst: Vault,
    resource: str | None = None,
    point_ids: Sequence[str] = (),
    progress: Progress | None = None,
    retain: timedelta | None = None,
    moving: Callable[[], None] | None = None,
) -> CopyResult:
    """Copy the selected points of ``src`` that ``dst`` lacks, oldest first.

    Each copy keeps its source's retention date, moved inside the target's
    bounds, unless ``retain`` (counted from the point's time) says otherwise.
    ``moving`` is called once, as data starts to move, if any point is missing.
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    result = CopyResult()
    if src.config.id == dst.config.id:
        raise UsageError("source and target are the same vault")
    with (
        VaultLock(src.backend, LockKind.SHARED, "copy"),
        VaultLock(dst.backend, LockKind.SHARED, "copy"),
    ):
        if point_ids:
            wanted = list({p.id: p for p in map(src.find_point, point_ids)}.values())
        else:
            wanted = src.points(resource)
            if resource is not None and not wanted:
                raise PointNotFound(f"of resource {resource}")
        prefix = f"{src.config.id}/"
        mapped = {
            p.origin.removeprefix(prefix): p.id
            for p in dst.points()
            if p.origin and p.origin.startswith(prefix)
        }
        missing = [p for p in wanted if p.id not in mapped]
        retention = {p.id: copy_retention(dst, p, retain) for p in missing}
        result.skipped = len(wanted) - len(missing)
        result.lag_before_s = _lag(missing, datetime.now(UTC))
        progress.start("copy", sum(int(p.stats.get("bytes", 0)) for p in missing))
        src.cache_packs(COPY_PACK_CACHE)
        dst.cache_packs(COPY_PACK_CACHE)
        stored = dst.stored_packs()
        indexed = dst.index.pack_names()
        # Deduplicating against an index that names lost packs would make new
        # points depend on data the target no longer has.
        lost = indexed - stored.keys()
        if lost:
            raise DamageError(
                f"the target's index names {len(lost)} missing pack(s); run "
                "`reprieve vault rebuild-index` on the target, then copy again"
            )
        strays = {p: size for p, size in stored.items() if p not in indexed}
        result.packs_resumed = index_stored_packs(dst, strays)
        if missing and moving is not None:
            moving()
        with BlobWriter(dst, uploads=COPY_UPLOADS) as writer:
            copier = _Copier(src, writer, progress)
            try:
                for point in sorted(missing, key=lambda p: (p.time, p.id)):
                    until = retention[point.id]
                    _copy_one(point, until, copier, writer, dst, src.config.id, mapped, result)
            finally:
                copier.readers.shutdown(wait=True, cancel_futures=True)

            result.bytes_transferred = writer.stats.bytes_stored
            result.bytes_read = copier.bytes_read
        progress.finish()
        # A database's points are only as good as the log after them.
        for name in sorted({p.resource for p in wanted if p.kind == "postgres"}):
            files, size = copy_logs(LogStore(src, name), LogStore(dst, name))
            result.log_files += files
            result.log_bytes += size
        left = [p for p in missing if p.id not in mapped]
        result.lag_after_s = _lag(left, datetime.now(UTC))
    result.duration_s = time.monotonic() - started
    return result


def verify_copied_tree(dst: Vault, tree_id: bytes) -> None:
    """Read back the target's new trees, and find every blob they name indexed.

    Runs after the index is written and before the point is saved, so a
    point never lands on data the target cannot show it holds.
    """
    stack = [tree_id]
    seen: set[bytes] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        what = f"tree {current.hex()[:12]}"
        if dst.locate(current).type != BlobType.TREE:
            raise DamageError(f"{what} is not a tree in the target")
        subtrees, content = tree_links(dst.read_blob(current), what)
        stack.extend(subtrees)
        missing = next((b for b in content if b not in dst.index), None)
        if missing is not None:
            raise DamageError(f"copied blob {missing.hex()[:12]} is not in the target")


def _copy_one(
    point: Point,
    until: datetime | None,
    copier: _Copier,
    writer: BlobWriter,
    dst: Vault,
    source_id: str,
    mapped: dict[str, str],
    result: CopyResult,
) -> None:
    """Copy one point: its data, then (index written) the point itself."""
    try:
        tree = copier.point_tree(point.tree)
    except DamageError as exc:
        # One damaged point must not hold back every later one.
        result.damaged.append((point.id, str(exc)))
        return
    writer.flush()
    verify_copied_tree(dst, tree)
    copy = Point(
        resource=point.resource,
        kind=point.kind,
        time=point.time,
        tree=tree,
        tags=dict(point.tags),
        paths=list(point.paths),
        host=point.host,
        parent=mapped.get(point.parent or ""),
        stats=dict(point.stats),
        origin=f"{source_id}/{point.id}",
        retain_until=until,
    )
    lock_point_data(dst, copy)
    dst.save_point(copy)
    mapped[point.id] = copy.id
    result.copied.append((point.id, copy.id))
