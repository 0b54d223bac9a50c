"""Files and volumes: walk folders into trees of nodes, reading only what changed.

The point's root tree mirrors absolute paths: backing up ``/data`` and
``/etc/app`` gives a root with ``data`` and ``etc``, and ``etc`` holds only
``app``. Paths are handled as bytes throughout, so names that are not UTF-8
survive.

A file whose type, size, mtime, ctime, and inode equal those of the same
path in the parent point keeps the parent's content list and is not read.
Small files are read in the walking thread (threads cost more than they
give on small reads); larger ones go to a reader pool, which chunks and
hashes them while the writer's store pool compresses and encrypts.
Directories are finished in post-order through a bounded queue, so memory
stays flat however large the tree is.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

from reprieve.engine.progress import NullProgress, Progress
from reprieve.errors import UsageError
from reprieve.vault.index import Index
from reprieve.vault.packs import BlobType
from reprieve.vault.repository import Vault
from reprieve.vault.tree import Node, NodeType, encode_tree
from reprieve.vault.writer import BlobWriter

INLINE_READ = 256 * 1024
# Walked folders wait here for their large files; the walk pauses only when
# this many entries are waiting, which bounds memory without stalling the
# walk behind one slow folder.
MAX_PENDING_NODES = 200_000

_TYPES = {
    stat.S_IFREG: NodeType.FILE,
    stat.S_IFDIR: NodeType.DIR,
    stat.S_IFLNK: NodeType.SYMLINK,
    stat.S_IFIFO: NodeType.FIFO,
    stat.S_IFCHR: NodeType.CHARDEV,
    stat.S_IFBLK: NodeType.BLOCKDEV,
}


@dataclass
class BackupStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    files_read: int = 0
    bytes_read: int = 0
    files_unchanged: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def node_from_stat(name: bytes, st: os.stat_result) -> Node | None:
    ntype = _TYPES.get(stat.S_IFMT(st.st_mode))
    if ntype is None:
        return None
    return Node(
        name=name,
        type=ntype,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        size=st.st_size if ntype is NodeType.FILE else 0,
        inode=st.st_ino,
        dev=st.st_dev,
        rdev=st.st_rdev if ntype in (NodeType.CHARDEV, NodeType.BLOCKDEV) else 0,
        sparse=ntype is NodeType.FILE and st.st_blocks * 512 < st.st_size,
    )


def _unchanged(node: Node, old: Node, index: Index) -> bool:
    return (
        old.type is NodeType.FILE
        and old.hardlink is None
        and old.size == node.size
        and old.mtime_ns == node.mtime_ns
        and old.ctime_ns == node.ctime_ns
        and old.inode == node.inode
        and all(blob in index for blob in old.content)
    )


@dataclass
class _PendingDir:
    """A walked directory whose tree blob waits for its files' content."""

    nodes: list[Node]
    reads: list[tuple[bytes, Node, Future[tuple[list[bytes], int]]]]
    owner: Node | None
    tree_id: bytes = b""


class FileWalker:
    def __init__(
        self,
        vault: Vault,
        writer: BlobWriter,
        excludes: Sequence[str] = (),
        progress: Progress | None = None,
        readers: int = 2,
    ) -> None:
        self.vault = vault
        self.writer = writer
        self.excludes = list(excludes)
        self.progress: Progress = progress or NullProgress()
        self.stats = BackupStats()
        self.readers = ThreadPoolExecutor(readers, thread_name_prefix="read")
        self._pending: deque[_PendingDir] = deque()
        self._pending_nodes = 0
        self._links: dict[tuple[int, int], bytes] = {}

    # -- reading file content ------------------------------------------------

    def _read_small(self, path: bytes, size: int) -> tuple[list[bytes], int]:
        """One open, one read of the size the walk saw (and a byte more, to
        notice growth), one close; a file that grew is read to its end."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, size + 1)
            if len(data) != size:
                rest = [data]
                while part := os.read(fd, INLINE_READ):
                    rest.append(part)
                data = b"".join(rest)
        finally:
            os.close(fd)
        return ([self.writer.add(data)] if data else []), len(data)

    def _read_large(self, path: bytes, size: int) -> tuple[list[bytes], int]:
        ids = []
        total = 0
        with open(path, "rb", buffering=0) as f:
            for chunk in self.writer.chunks(f, size):
                ids.append(self.writer.add(chunk))
                total += len(chunk)
                self.progress.advance(len(chunk))
        return ids, total

    def _done_read(self, path: bytes, node: Node, fut: Future[tuple[list[bytes], int]]) -> None:
        exc = fut.exception()
        if exc is None:
            node.content, node.size = fut.result()
            self.stats.files_read += 1
            self.stats.bytes_read += node.size
        elif isinstance(exc, OSError):
            self.stats.errors.append(f"{os.fsdecode(path)}: {exc.strerror or exc}")
            node.content, node.size = [], 0
        else:
            raise exc

    # -- walking -------------------------------------------------------------

    def _excluded(self, path: bytes, name: bytes) -> bool:
        if not self.excludes:
            return False
        spath, sname = os.fsdecode(path), os.fsdecode(name)
        return any(fnmatch(sname, p) or fnmatch(spath, p) for p in self.excludes)

    def _old_children(self, old: Node | None) -> dict[bytes, Node]:
        if old is None or old.type is not NodeType.DIR or old.subtree is None:
            return {}
        if old.subtree not in self.vault.index:
            return {}
        return {n.name: n for n in self.vault.read_tree(old.subtree)}

    def _entry(
        self, path: bytes, rel: bytes, name: bytes, old: Node | None, pend: _PendingDir
    ) -> None:
        try:
            st = os.lstat(path)
        except OSError as exc:
            self.stats.errors.append(f"{os.fsdecode(path)}: {exc.strerror or exc}")
            return
        node = node_from_stat(name, st)
        if node is None:
            self.stats.skipped += 1
            return
        pend.nodes.append(node)
        if node.type is NodeType.DIR:
            self._walk_dir(path, rel, node, old)
        elif node.type is NodeType.SYMLINK:
            try:
                node.target = os.readlink(path)
            except OSError as exc:  # replaced or removed since the lstat
                self.stats.errors.append(f"{os.fsdecode(path)}: {exc.strerror or exc}")
                pend.nodes.remove(node)
        elif node.type is NodeType.FILE:
            self._file(path, rel, node, old, st, pend)

    def _file(
        self,
        path: bytes,
        rel: bytes,
        node: Node,
        old: Node | None,
        st: os.stat_result,
        pend: _PendingDir,
    ) -> None:
        self.stats.files += 1
        if st.st_nlink > 1:
            first = self._links.setdefault((st.st_dev, st.st_ino), rel)
            if first != rel:
                node.hardlink = first
                node.size = 0
                return
        self.stats.bytes += node.size
        if old is not None and _unchanged(node, old, self.vault.index):
            node.content = list(old.content)
            self.stats.files_unchanged += 1
            self.progress.advance(node.size, files=1)
            return
        if node.size <= INLINE_READ:
            try:
                node.content, node.size = self._read_small(path, node.size)
            except OSError as exc:
                self.stats.errors.append(f"{os.fsdecode(path)}: {exc.strerror or exc}")
                node.content, node.size = [], 0
                return
            self.stats.files_read += 1
            self.stats.bytes_read += node.size
            self.progress.advance(node.size, files=1)
        else:
            pend.reads.append((path, node, self.readers.submit(self._read_large, path, node.size)))
            self.progress.advance(files=1)

    def _walk_dir(self, path: bytes, rel: bytes, owner: Node | None, old: Node | None) -> None:
        self.stats.dirs += 1
        old_children = self._old_children(old)
        pend = _PendingDir(nodes=[], reads=[], owner=owner)
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            self.stats.errors.append(f"{os.fsdecode(path)}: {exc.strerror or exc}")
            names = []
        # Joined by hand: os.path.join costs more than the lstat per entry.
        base = path if path.endswith(b"/") else path + b"/"
        prefix = rel + b"/" if rel else b""
        for name in names:
            child = base + name
            if self._excluded(child, name):
                continue
            self._entry(child, prefix + name, name, old_children.get(name), pend)
        self._queue(pend)

    def _queue(self, pend: _PendingDir) -> None:
        self._pending.append(pend)
        self._pending_nodes += len(pend.nodes)
        while self._pending and (
            self._pending_nodes > MAX_PENDING_NODES
            or all(f.done() for _, _, f in self._pending[0].reads)
        ):
            self._finish(self._pending.popleft())

    def _finish(self, pend: _PendingDir) -> None:
        self._pending_nodes -= len(pend.nodes)
        for path, node, fut in pend.reads:
            self._done_read(path, node, fut)
        pend.tree_id = self.writer.add(encode_tree(pend.nodes), BlobType.TREE)
        if pend.owner is not None:
            pend.owner.subtree = pend.tree_id

    def drain(self) -> None:
        while self._pending:
            self._finish(self._pending.popleft())

    def close(self) -> None:
        self.readers.shutdown(wait=True, cancel_futures=True)


def _skeleton(paths: Sequence[str]) -> dict[bytes, Any]:
    """Nested dict of path components; a leaf (None) is walked in full."""
    root: dict[bytes, Any] = {}
    for p in paths:
        given = os.path.abspath(os.fsencode(p))
        # Folders above the path are resolved (they may be symlinks); the
        # path itself is kept as it is, so a symlink there is backed up as one.
        absolute = os.path.join(os.path.realpath(os.path.dirname(given)), os.path.basename(given))
        if not os.path.lexists(absolute):
            raise UsageError(f"{p} does not exist; check the path and rerun")
        parts = [c for c in absolute.split(b"/") if c]
        if not parts:
            raise UsageError("backing up / as a whole is not supported; name its folders")
        level = root
        for part in parts[:-1]:
            nxt = level.get(part, {})
            if nxt is None:
                break
            level = level.setdefault(part, nxt)
        else:
            level[parts[-1]] = None
    return root


def backup_paths(
    vault: Vault,
    writer: BlobWriter,
    paths: Sequence[str],
    parent_tree: bytes | None,
    excludes: Sequence[str] = (),
    progress: Progress | None = None,
) -> tuple[bytes, BackupStats]:
    """Walk ``paths`` into the vault; returns the root tree id and the counts."""
    walker = FileWalker(vault, writer, excludes, progress)
    try:
        root_old = (
            Node(b"", NodeType.DIR, 0, 0, 0, 0, 0, subtree=parent_tree)
            if parent_tree is not None
            else None
        )
        root_tree = _walk_skeleton(walker, b"/", b"", _skeleton(paths), root_old, None)
        walker.drain()
        tree_id = root_tree.tree_id
    finally:
        walker.close()
    return tree_id, walker.stats


def _walk_skeleton(
    walker: FileWalker,
    path: bytes,
    rel: bytes,
    level: dict[bytes, Any],
    old: Node | None,
    owner: Node | None,
) -> _PendingDir:
    """Intermediate folders keep their own metadata but only the named children."""
    old_children = walker._old_children(old)
    pend = _PendingDir(nodes=[], reads=[], owner=owner)
    for name in sorted(level):
        child = os.path.join(path, name)
        child_rel = os.path.join(rel, name) if rel else name
        sub = level[name]
        if sub is None:
            walker._entry(child, child_rel, name, old_children.get(name), pend)
            continue
        try:
            node = node_from_stat(name, os.lstat(child))
        except OSError as exc:
            raise UsageError(f"cannot read {os.fsdecode(child)}: {exc.strerror}") from exc
        if node is None or node.type is not NodeType.DIR:
            raise UsageError(f"{os.fsdecode(child)} is not a folder")
        pend.nodes.append(node)
        _walk_skeleton(walker, child, child_rel, sub, old_children.get(name), node)
    walker._queue(pend)
    return pend
