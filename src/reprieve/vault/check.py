"""Verify a vault: structure, index, trees, and (with read_data) every blob.

Without ``read_data``: every key, index file, and point decrypts and matches
its name; every indexed pack exists and its header (read from the pack's
end) agrees with the index; every point's trees decode and every blob they
reference is indexed. With ``read_data``: every pack is read whole, must
hash to its name, and every blob in it is decrypted and re-hashed against
its id. Damage is reported per object and, for blobs, traced to each point
and file that needs them, so an operator knows exactly what is lost.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from reprieve.engine.progress import NullProgress, Progress
from reprieve.errors import DamageError, NotFoundError, ReprieveError
from reprieve.vault.crypto import content_name
from reprieve.vault.index import Index, Location
from reprieve.vault.keys import KeyWrapper
from reprieve.vault.packs import BlobEntry, BlobType, pack_path, parse_header, read_header
from reprieve.vault.repository import Vault
from reprieve.vault.tree import NodeType

# Pack headers read at once (rebuilding or adding to the index): one small request each.
HEADER_READERS = 8


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    points: int = 0
    packs: int = 0
    blobs_read: int = 0
    read_data: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "read_data": self.read_data,
            "points": self.points,
            "packs": self.packs,
            "blobs_read": self.blobs_read,
            "errors": self.errors,
            "warnings": self.warnings,
            "damaged_points": self.damaged,
        }


class Checker:
    def __init__(self, vault: Vault, read_data: bool, progress: Progress | None = None) -> None:
        self.vault = vault
        self.read_data = read_data
        self.progress: Progress = progress or NullProgress()
        self.report = CheckReport(read_data=read_data)
        self.bad_blobs: set[bytes] = set()
        self._tree_damage: dict[bytes, list[str]] = {}

    def run(self) -> CheckReport:
        self._keys()
        # Points first: a point saved while this check runs has its index
        # written before it, so every listed point's blobs are in the index.
        names = self.vault.point_names()
        index = self._index()
        self._packs(index)
        self._points(names)
        return self.report

    def _keys(self) -> None:
        for name, _ in self.vault.backend.list("keys"):
            raw = self.vault.backend.get(name)
            short = name.removeprefix("keys/")
            if content_name(raw) != short:
                self.report.errors.append(f"key file {short[:12]} does not match its name")
                continue
            try:
                KeyWrapper.from_bytes(short, raw)
            except ReprieveError as exc:
                self.report.errors.append(str(exc))

    def _index(self) -> Index:
        self.vault.reload_index()
        index = self.vault.index
        self.report.errors += list(index.damaged.values())
        return index

    def _packs(self, index: Index) -> None:
        on_disk = {name.rsplit("/", 1)[-1]: size for name, size in self.vault.backend.list("packs")}
        by_pack = index.packs()
        for name in sorted(set(on_disk) - set(by_pack)):
            if index.damaged:
                self.report.warnings.append(
                    f"pack {name[:12]} is in no readable index; "
                    "`reprieve vault rebuild-index` restores it to the index"
                )
            else:
                self.report.warnings.append(
                    f"pack {name[:12]} is not indexed (left by an interrupted write; "
                    "prune removes it)"
                )
        total = sum(on_disk.get(p, 0) for p in by_pack) if self.read_data else None
        self.progress.start("check", total)
        for pack, blobs in sorted(by_pack.items()):
            self.report.packs += 1
            if pack not in on_disk:
                self.report.errors.append(f"pack {pack[:12]} is missing")
                self.bad_blobs.update(b for b, _ in blobs)
                continue
            try:
                if self.read_data:
                    self._read_pack(pack, blobs, on_disk[pack])
                else:
                    self._pack_header(pack, blobs, on_disk[pack])
            except ReprieveError as exc:
                self.report.errors.append(str(exc))
        self.progress.finish()

    def _pack_header(self, pack: str, blobs: list[tuple[bytes, Location]], size: int) -> None:
        entries = {e.id: e for e in read_header(self.vault.backend, self.vault.cipher, pack, size)}
        for blob_id, loc in blobs:
            e = entries.get(blob_id)
            if e is None or (e.offset, e.length) != (loc.offset, loc.length):
                self.report.errors.append(f"pack {pack[:12]} header disagrees with the index")
                return

    def _read_pack(self, pack: str, blobs: list[tuple[bytes, Location]], size: int) -> None:
        data = self.vault.backend.get(pack_path(pack))
        self.progress.advance(len(data))
        damaged = []
        if content_name(data) != pack:
            damaged.append("content does not match its name")
        try:
            parse_header(self.vault.cipher, pack, data, size)
        except DamageError as exc:
            damaged.append(str(exc))
        for blob_id, loc in blobs:
            self.report.blobs_read += 1
            piece = data[loc.offset : loc.offset + loc.length]
            try:
                self.vault.decode_blob(blob_id, loc.type, loc.flags, loc.raw_length, piece)
            except DamageError:
                self.bad_blobs.add(blob_id)
        if self.bad_blobs.intersection(b for b, _ in blobs):
            count = len(self.bad_blobs.intersection(b for b, _ in blobs))
            damaged.append(f"{count} blob(s) fail verification")
        if damaged:
            self.report.errors.append(f"pack {pack[:12]} is damaged: {'; '.join(damaged)}")

    def _points(self, names: list[str]) -> None:
        for name in names:
            try:
                point = self.vault.load_point(name)
            except ReprieveError as exc:
                self.report.errors.append(str(exc))
                continue
            self.report.points += 1
            damage = self._tree(point.tree)
            if damage:
                self.report.damaged[point.id] = damage
                self.report.errors.append(
                    f"point {point.short_id} ({point.resource}): {len(damage)} path(s) damaged, "
                    f"first {damage[0]}"
                )

    def _tree(self, tree_id: bytes) -> list[str]:
        """Damaged paths under a tree, relative to it (memoised per tree)."""
        known = self._tree_damage.get(tree_id)
        if known is not None:
            return known
        found: list[str] = []
        loc = self.vault.index.get(tree_id)
        if loc is None or tree_id in self.bad_blobs or loc.type != BlobType.TREE:
            found = ["(folder listing missing or damaged)"]
        else:
            try:
                nodes = self.vault.read_tree(tree_id)
            except ReprieveError:
                nodes = []
                found = ["(folder listing unreadable)"]
            for node in nodes:
                name = os.fsdecode(node.name)
                if node.type is NodeType.DIR and node.subtree is not None:
                    found += [f"{name}/{p}" for p in self._tree(node.subtree)]
                elif any(b in self.bad_blobs or b not in self.vault.index for b in node.content):
                    found.append(name)
        self._tree_damage[tree_id] = found
        return found


def check_vault(vault: Vault, read_data: bool, progress: Progress | None = None) -> CheckReport:
    return Checker(vault, read_data, progress).run()


def rebuild_index(vault: Vault) -> dict[str, int]:
    """Replace every index file by one built from the packs' own headers.

    A pack whose header is damaged keeps the entries the readable index
    files have for it (its blobs may well be intact); it is counted, and
    `check --read-data` names what it holds.
    """
    known = vault.index.packs()
    stored = vault.stored_packs()
    packs: dict[str, list[BlobEntry]] = {}
    unreadable = 0
    for pack, entries in _read_headers(vault, stored, ReprieveError).items():
        if entries is None:
            unreadable += 1
            entries = [
                BlobEntry(b, loc.type, loc.flags, loc.offset, loc.length, loc.raw_length)
                for b, loc in known.get(pack, [])
            ]
        packs[pack] = entries
    replaced = len(list(vault.backend.list("index")))
    vault.replace_index({p: e for p, e in packs.items() if e})
    return {"packs": len(packs), "unreadable_packs": unreadable, "index_files_replaced": replaced}


def index_stored_packs(vault: Vault, stored: dict[str, int]) -> int:
    """Index ``stored`` packs (name: size) from their own headers; returns how many.

    For the packs an interrupted run stored but never named in an index file:
    indexed, their blobs are found by the next run instead of being sent
    again. A pack whose header cannot be read or authenticated, or that is
    gone since it was listed, is left alone (its blobs are simply stored
    anew; prune removes such a pack). Another run storing into the vault at
    the same time may index one of these packs too, which is harmless:
    several index files may name the same pack.
    """
    headers = _read_headers(vault, stored, DamageError, NotFoundError)
    found = {pack: entries for pack, entries in headers.items() if entries}
    if not found:
        return 0
    name = vault.write_index(found)
    for pack, entries in found.items():
        vault.index.add_pack(pack, entries, name)
    return len(found)


def _read_headers(
    vault: Vault, stored: dict[str, int], *tolerated: type[ReprieveError]
) -> dict[str, list[BlobEntry] | None]:
    """The entries in each of ``stored`` packs' headers (name: size), read
    several at once; None for a pack whose read raised one of ``tolerated``."""

    def header(pack: str) -> list[BlobEntry] | None:
        try:
            return read_header(vault.backend, vault.cipher, pack, stored[pack])
        except tolerated:
            return None

    if not stored:
        return {}
    with ThreadPoolExecutor(HEADER_READERS, thread_name_prefix="header") as pool:
        return dict(zip(stored, pool.map(header, stored), strict=True))
