"""Restore a files point into a folder, with content and metadata.

The walk creates folders, links and special files and plans the content:
for every pack, which blobs to take from it and where each goes (a blob
deduplicated across files goes to every one of them). A small pool then
reads each pack once, only the spans it needs, and writes every blob in it
to its places (authenticated and re-hashed on the way). Reading file by
file instead fetched a pack again whenever files far apart in the tree
shared it: twice the vault's size for a typical first backup. A file is
finished (size, metadata) once its last blob is written. Hard links, then
folder metadata (deepest first, so writing children does not disturb a
parent's times) come last. A file whose blobs are damaged is not left
behind half-written: it is removed and named in the error, and the restore
of the other files goes on.

The plan holds a few hundred bytes per blob and file: a restore of many
millions of files needs memory for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from reprieve.engine.progress import NullProgress, Progress
from reprieve.errors import DamageError, NotFoundError, StorageError, UsageError
from reprieve.vault.repository import Vault
from reprieve.vault.tree import Node, NodeType


@dataclass(eq=False)
class _File:
    """A regular file being restored: how many of its blobs are still to write."""

    path: bytes
    node: Node
    left: int
    damaged: bool = False


# Where a blob goes: the file, and the offset in it.
_Places = list[tuple[_File, int]]


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    damaged: list[str] = field(default_factory=list)


def _included(rel: bytes, includes: Sequence[bytes]) -> bool:
    if not includes:
        return True
    return any(
        rel == inc or rel.startswith(inc + b"/") or inc.startswith(rel + b"/") for inc in includes
    )


def _apply_meta(path: bytes, node: Node) -> None:
    follow = node.type is not NodeType.SYMLINK
    with contextlib.suppress(PermissionError):  # not root: the restoring user owns them
        os.chown(path, node.uid, node.gid, follow_symlinks=follow)
    if follow:
        os.chmod(path, node.mode)
    os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=follow)


class Restorer:
    def __init__(
        self,
        vault: Vault,
        target: Path,
        includes: Sequence[str] = (),
        overwrite: bool = False,
        progress: Progress | None = None,
        workers: int = 2,
    ) -> None:
        self.vault = vault
        self.target = os.fsencode(target.absolute())
        self.includes = [os.fsencode(i.strip("/")) for i in includes]
        self.overwrite = overwrite
        self.progress: Progress = progress or NullProgress()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="restore")
        self.stats = RestoreStats()
        self._files: list[_File] = []
        # Pack name -> blob id -> its places, packs in the order the walk met them.
        self._plan: dict[str, dict[bytes, _Places]] = {}
        self._dirs: list[tuple[bytes, Node]] = []
        self._links: list[tuple[bytes, Node]] = []
        self._matched = False
        self._lock = threading.Lock()
        self._link_sources: dict[bytes, bytes] = {}
        self.root_tree = b""

    def run(self, root_tree: bytes) -> RestoreStats:
        if os.path.isdir(self.target) and os.listdir(self.target) and not self.overwrite:
            raise UsageError(
                f"restore target {os.fsdecode(self.target)} is not empty; "
                "choose an empty folder or pass --overwrite"
            )
        try:
            os.makedirs(self.target, exist_ok=True)
            self.root_tree = root_tree
            try:
                self._restore_tree(root_tree, b"")
            finally:
                # A damaged folder listing stops the walk: what it planned is
                # still written, or removed, before the error goes on.
                self._write_content()
            for path, node in self._links:
                self._link(path, node)
            for path, node in reversed(self._dirs):
                _apply_meta(path, node)
        except OSError as exc:
            raise StorageError(f"restoring into {os.fsdecode(self.target)}: {exc}") from exc
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.includes and not self._matched:
            raise UsageError("no path in the point matches --include; see `reprieve points show`")
        if self.stats.damaged:
            first = self.stats.damaged[0]
            raise DamageError(
                f"{len(self.stats.damaged)} file(s) could not be restored intact (first: {first})"
            )
        return self.stats

    def _write_content(self) -> None:
        plan, self._plan = self._plan, {}
        reads = [self.pool.submit(self._restore_pack, pack, blobs) for pack, blobs in plan.items()]
        for read in reads:
            read.result()
        for file in self._files:
            if file.damaged:
                if os.path.lexists(file.path):
                    os.unlink(file.path)
                self.stats.damaged.append(os.fsdecode(os.path.relpath(file.path, self.target)))
        self._files = []

    def _restore_pack(self, pack: str, blobs: dict[bytes, _Places]) -> None:
        """Write every planned blob of one pack; damage spoils only its files."""
        done: set[bytes] = set()
        try:
            for blob_id, plain, _ in self.vault.read_pack_blobs(pack, list(blobs)):
                self._place(plain, blobs[blob_id])
                done.add(blob_id)
        except (DamageError, NotFoundError) as exc:
            pack_missing = isinstance(exc.__cause__, NotFoundError)
            for blob_id, places in blobs.items():
                if blob_id not in done:
                    self._salvage(blob_id, places, pack_missing)

    def _salvage(self, blob_id: bytes, places: _Places, pack_missing: bool) -> None:
        """After damage in its pack, read one blob alone: what is intact is saved."""
        plain = None
        if not pack_missing:
            with contextlib.suppress(DamageError, NotFoundError):
                plain = self.vault.read_blob(blob_id)
        if plain is not None:
            self._place(plain, places)
            return
        for file, _ in places:
            file.damaged = True
            self._settle(file)

    def _place(self, plain: bytes, places: _Places) -> None:
        zero: bool | None = None
        for file, offset in places:
            if not file.damaged:
                if file.node.sparse and zero is None:
                    zero = plain.count(0) == len(plain)
                if not (file.node.sparse and zero):  # else a hole, as the original had
                    _write_at(file.path, plain, offset)
                self.progress.advance(len(plain))
            self._settle(file)

    def _settle(self, file: _File) -> None:
        """Count one of the file's blobs done; finish the file after its last."""
        with self._lock:
            file.left -= 1
            if file.left or file.damaged:
                return
        self._finish(file)

    def _finish(self, file: _File) -> None:
        fd = os.open(file.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, file.node.size)
        finally:
            os.close(fd)
        _apply_meta(file.path, file.node)
        self.progress.advance(files=1)
        with self._lock:
            self.stats.bytes += file.node.size

    def _prepare(self, path: bytes) -> None:
        """Clear whatever is in the way of a new entry (only under --overwrite)."""
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    def _restore_tree(self, tree_id: bytes, rel: bytes) -> None:
        for node in self.vault.read_tree(tree_id):
            child_rel = os.path.join(rel, node.name) if rel else node.name
            if not _included(child_rel, self.includes):
                continue
            if any(child_rel == i or child_rel.startswith(i + b"/") for i in self.includes):
                self._matched = True
            path = os.path.join(self.target, child_rel)
            self._restore_node(path, child_rel, node)

    def _restore_node(self, path: bytes, rel: bytes, node: Node) -> None:
        if node.type is NodeType.DIR:
            if not os.path.isdir(path) or os.path.islink(path):
                self._prepare(path)
                os.mkdir(path, 0o700)
            self.stats.dirs += 1
            self._dirs.append((path, node))
            if node.subtree is not None:
                self._restore_tree(node.subtree, rel)
            return
        self._prepare(path)
        if node.type is NodeType.FILE:
            self.stats.files += 1
            if node.hardlink is not None:
                self._links.append((path, node))
                return
            self._plan_file(path, node)
            return
        if node.type is NodeType.SYMLINK:
            os.symlink(node.target or b"", path)
        elif node.type is NodeType.FIFO:
            os.mkfifo(path, node.mode)
        else:
            kind = stat.S_IFCHR if node.type is NodeType.CHARDEV else stat.S_IFBLK
            os.mknod(path, node.mode | kind, node.rdev)
        _apply_meta(path, node)

    def _plan_file(self, path: bytes, node: Node) -> None:
        """Put the file's blobs in the plan; it is created by its first write."""
        file = _File(path, node, len(node.content))
        self._files.append(file)
        try:
            places = []
            offset = 0
            for blob_id in node.content:
                loc = self.vault.locate(blob_id)
                places.append((loc.pack, blob_id, offset))
                offset += loc.raw_length
        except DamageError:
            file.damaged = True
            return
        if not places:
            self._finish(file)
        for pack, blob_id, at in places:
            self._plan.setdefault(pack, {}).setdefault(blob_id, []).append((file, at))

    def _find(self, rel: bytes) -> Node | None:
        tree: bytes | None = self.root_tree
        node = None
        for part in rel.split(b"/"):
            if tree is None:
                return None
            node = next((n for n in self.vault.read_tree(tree) if n.name == part), None)
            if node is None:
                return None
            tree = node.subtree
        return node

    def _link(self, path: bytes, node: Node) -> None:
        assert node.hardlink is not None
        source = self._link_sources.get(node.hardlink, os.path.join(self.target, node.hardlink))
        if os.path.lexists(source):
            os.link(source, path)
            return
        # The first link lies outside --include: restore its content here once.
        first = self._find(node.hardlink)
        if first is None or first.type is not NodeType.FILE:
            raise DamageError(f"hard link {os.fsdecode(path)} points at a missing file")
        self._plan_file(path, first)
        self._write_content()
        if os.path.lexists(path):  # else damaged, and already named
            self._link_sources[node.hardlink] = path


def _write_at(path: bytes, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written
    finally:
        os.close(fd)
