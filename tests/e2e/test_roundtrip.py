"""Back up a tree full of awkward files, restore it, and compare it with an independent walker.

The comparison does not use reprieve: it lstat()s both trees with byte paths and checks type,
permission bits, owner, size, mtime in ns, symlink targets, a content hash, and which names
share an inode.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from conftest import ok
from support import restored_at

MiB = 1 << 20
SPARSE_SIZE = 50 * MiB
# Fixed odd nanosecond stamps, so a restore that rounds to µs or s is caught.
FILE_MTIME_NS = 1_600_000_000_123_456_789
DIR_MTIME_NS = 1_500_000_000_987_654_321
ODD_NAMES = [
    b"with space",
    b"new\nline",
    b"caf\xe9",
    b"-leading-dash",
    "ünïcødé ☃ 名前".encode(),
]


@dataclass(frozen=True)
class Entry:
    """What the comparison checks for one path; ``None`` where a field does not apply."""

    kind: int
    mode: int
    uid: int
    gid: int
    size: int | None
    mtime_ns: int
    target: bytes | None
    sha256: str | None


@dataclass
class Snapshot:
    entries: dict[bytes, Entry]
    link_groups: set[frozenset[bytes]]


def _sha256(path: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def snapshot(root: bytes) -> Snapshot:
    """Every path under ``root`` (itself included, as b"."), without following symlinks."""
    entries: dict[bytes, Entry] = {}
    inodes: dict[tuple[int, int], set[bytes]] = defaultdict(set)

    def visit(path: bytes, rel: bytes) -> None:
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        entries[rel] = Entry(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            # A folder's st_size is file-system bookkeeping, not content.
            size=None if kind == stat.S_IFDIR else st.st_size,
            mtime_ns=st.st_mtime_ns,
            target=os.readlink(path) if kind == stat.S_IFLNK else None,
            sha256=_sha256(path) if kind == stat.S_IFREG else None,
        )
        if kind == stat.S_IFREG and st.st_nlink > 1:
            inodes[(st.st_dev, st.st_ino)].add(rel)
        if kind == stat.S_IFDIR:
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), os.path.join(rel, name))

    visit(root, b".")
    return Snapshot(entries, {frozenset(names) for names in inodes.values()})


def assert_same_tree(expected: Snapshot, actual: Snapshot) -> None:
    missing = sorted(set(expected.entries) - set(actual.entries))
    extra = sorted(set(actual.entries) - set(expected.entries))
    assert not missing and not extra, f"missing {missing}, unexpected {extra}"
    for rel, want in expected.entries.items():
        assert actual.entries[rel] == want, f"{rel!r} differs"
    assert actual.link_groups == expected.link_groups


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def build_tree(root: Path) -> None:
    rng = random.Random(20240611)
    root.mkdir()

    # ~20 MiB mixing incompressible runs, zero runs, and repeated text.
    log = b"".join(b"log line %d\n" % i for i in range(100_000))
    parts: list[bytes] = []
    while sum(map(len, parts)) < 20 * MiB:
        kind = rng.randrange(3)
        if kind == 0:
            parts.append(rng.randbytes(rng.randrange(1, 3 * MiB)))
        elif kind == 1:
            parts.append(bytes(rng.randrange(1, MiB)))
        else:
            parts.append(log[: rng.randrange(1, len(log))])
    _write(root / "big.bin", b"".join(parts))
    _write(root / "random.bin", rng.randbytes(3 * MiB + 17))
    _write(root / "text.txt", b"the quick brown fox jumps over the lazy dog\n" * 50_000)
    _write(root / "empty", b"")

    sparse = root / "sparse.img"
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_SIZE)
        # Written regions only in the first 16 MiB: restore keeps holes at chunk granularity
        # (up to 8 MiB), so the last 34 MiB must stay holes whatever the chunk boundaries.
        for offset in (0, 4 * MiB + 123, 12 * MiB):
            f.seek(offset)
            f.write(rng.randbytes(4096))

    small = root / "small"
    small.mkdir()
    for i in range(300):
        sub = small / f"d{i % 10}"
        sub.mkdir(exist_ok=True)
        _write(sub / f"f{i:03}.dat", rng.randbytes(rng.randrange(0, 5000)))

    os.symlink("text.txt", root / "link-relative")
    os.symlink(root / "text.txt", root / "link-absolute")
    os.symlink("does/not/exist", root / "link-dangling")
    os.symlink("small", root / "link-to-dir")

    _write(root / "hl_a", rng.randbytes(70_000))
    os.link(root / "hl_a", root / "hl_b")
    (root / "other").mkdir()
    os.link(root / "hl_a", root / "other" / "hl_c")
    _write(root / "other" / "plain", b"not linked\n")

    for name in ODD_NAMES:
        with open(os.path.join(os.fsencode(root), name), "wb") as f:
            f.write(name * 3)

    _write(root / "private", b"secret\n", 0o600)
    _write(root / "tool", b"#!/bin/sh\n", 0o755)
    _write(root / "setuid", b"#!/bin/sh\n", 0o4755)
    (root / "shared").mkdir()
    (root / "shared").chmod(0o1777)
    _write(root / "shared" / "note", b"note\n")
    os.mkfifo(root / "fifo", 0o640)

    owned = root / "owned"
    owned.mkdir()
    _write(owned / "file", b"owned\n", 0o640)
    os.symlink("file", owned / "link")
    for path in (owned, owned / "file"):
        os.chown(path, 1234, 5678)
    os.lchown(owned / "link", 1234, 5678)
    # chown clears set-id bits, so the set-gid file gets its mode after its owner.
    _write(owned / "setgid", b"#!/bin/sh\n")
    os.chown(owned / "setgid", 1234, 5678)
    (owned / "setgid").chmod(0o2750)

    _write(root / "scratch.tmp", b"excluded\n")
    _write(small / "d3" / "partial.tmp", b"excluded\n")

    # Times last, deepest first, so creating an entry does not move its folder's mtime again.
    for i, (dirpath, dirnames, filenames) in enumerate(
        sorted(os.walk(os.fsencode(root)), key=lambda w: -w[0].count(b"/"))
    ):
        for j, name in enumerate(filenames + dirnames):
            entry = os.path.join(dirpath, name)
            if os.path.islink(entry) or not os.path.isdir(entry):
                stamp = FILE_MTIME_NS + 1_000_003 * (i * 1000 + j)
                os.utime(entry, ns=(stamp, stamp), follow_symlinks=False)
        stamp = DIR_MTIME_NS + 7_000_001 * i
        os.utime(dirpath, ns=(stamp, stamp))


def without_tmp(snap: Snapshot) -> Snapshot:
    entries = {rel: e for rel, e in snap.entries.items() if not rel.endswith(b".tmp")}
    return Snapshot(entries, snap.link_groups)


def back_up(source: Path, vault: str) -> str:
    args = ("--vault", vault, "--resource", "files", "--exclude", "*.tmp", "--json")
    point: str = ok("backup", "files", source, *args).json()["point"]
    return point


def test_restored_tree_equals_original_in_bytes_and_metadata(tmp_path: Path, vault: str) -> None:
    source = tmp_path / "src"
    build_tree(source)
    original = snapshot(os.fsencode(source))
    assert os.lstat(source / "sparse.img").st_blocks * 512 < SPARSE_SIZE // 10
    assert os.lstat(source / "setuid").st_mode & stat.S_ISUID

    point = back_up(source, vault)
    target = tmp_path / "restore"
    ok("restore", point, "--vault", vault, "--target", target)

    root = os.fsencode(restored_at(target, source))
    restored = snapshot(root)
    # The excluded files were in the source, so dropping them proves --exclude left them out.
    assert b"./scratch.tmp" in original.entries
    assert b"./small/d3/partial.tmp" in original.entries
    assert_same_tree(without_tmp(original), restored)
    # Spot checks that the fixture really holds what the comparison is meant to cover.
    assert {b"./hl_a", b"./hl_b", b"./other/hl_c"} in restored.link_groups
    assert restored.entries[b"./fifo"].kind == stat.S_IFIFO
    assert restored.entries[b"./owned/link"].uid == 1234
    assert restored.entries[b"./setuid"].mode == 0o4755
    assert restored.entries[b"./shared"].mode == 0o1777
    assert restored.entries[b"./big.bin"].mtime_ns % 1000 != 0
    assert b"./caf\xe9" in restored.entries

    sparse = os.lstat(os.path.join(root, b"sparse.img"))
    assert sparse.st_size == SPARSE_SIZE
    assert sparse.st_blocks * 512 < SPARSE_SIZE // 2, "restore filled the sparse file's holes"


def test_include_restores_only_the_named_subtrees_and_their_folders(
    tmp_path: Path, vault: str
) -> None:
    source = tmp_path / "src"
    build_tree(source)
    original = without_tmp(snapshot(os.fsencode(source)))
    point = back_up(source, vault)

    target = tmp_path / "restore"
    rel_source = str(source).lstrip("/")
    # other/hl_c's first name (hl_a) lies outside the include, so its content must come along.
    includes = ("--include", f"{rel_source}/small", "--include", f"/{rel_source}/other")
    ok("restore", point, "--vault", vault, "--target", target, *includes)

    chosen = {
        rel: e
        for rel, e in original.entries.items()
        if rel == b"."
        or rel.startswith((b"./small/", b"./other/"))
        or rel in (b"./small", b"./other")
    }
    # hl_c comes back alone, so no name in the restored tree shares its inode.
    assert_same_tree(Snapshot(chosen, set()), snapshot(os.fsencode(restored_at(target, source))))

    # Above the source, only the chain of folders down to it exists.
    above = os.fsencode(target)
    for part in os.fsencode(source).strip(b"/").split(b"/"):
        assert os.listdir(above) == [part]
        above = os.path.join(above, part)


def test_deeply_nested_tree_backs_up_and_restores(tmp_path: Path, vault: str) -> None:
    # Backup and restore recurse two frames per folder, so 700 levels pass Python's
    # default recursion limit of 1000; the restored path stays under PATH_MAX (4096).
    source = tmp_path / "src"
    bottom = source.joinpath(*["d"] * 700)
    bottom.mkdir(parents=True)
    content = random.Random(700).randbytes(10_000)
    (bottom / "deep.bin").write_bytes(content)

    point = back_up(source, vault)
    target = tmp_path / "restore"
    ok("restore", point, "--vault", vault, "--target", target)

    restored = restored_at(target, source).joinpath(*["d"] * 700, "deep.bin")
    assert restored.read_bytes() == content
    assert os.listdir(restored.parent) == ["deep.bin"]
