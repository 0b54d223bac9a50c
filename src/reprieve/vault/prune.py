"""Prune: remove data no point references, and repack half-empty packs.

Runs under the exclusive lock. The plan marks every blob reachable from any
point (refusing to go on if a tree cannot be read, since then it cannot
know what is still needed), then classifies packs: fully unused packs are
deleted, packs less than half used are repacked, packs not in any index
(left by an interrupted backup) are deleted.

Order, so that a kill at any moment leaves a consistent vault:
  1. copy the live blobs of repacked packs into new packs (envelopes are
     copied as they are: no re-encryption, the blob id is their AAD);
  2. write one new index covering every live blob at its current location;
  3. delete every older index file;
  4. delete the packs no index mentions any more, then `.tmp-*` leftovers.
Until step 3 finishes, old and new index files both point at packs that
exist; after it, nothing references the packs deleted in step 4.

On a vault whose storage locks objects, prune never tries to delete what is
still locked: a locked pack is neither deleted nor repacked, and a locked
index file stays, so every pack it lists stays too (it must never name a
pack that is gone). What is kept is reported with the date it frees up.
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reprieve.engine.progress import NullProgress, Progress
from reprieve.errors import DamageError
from reprieve.vault.crypto import ENVELOPE_OVERHEAD
from reprieve.vault.index import Location
from reprieve.vault.logs import base_starts, delete_logs, expired_logs
from reprieve.vault.packs import RECORD, TRAILER, BlobEntry, PackBuilder, pack_path
from reprieve.vault.repository import Vault
from reprieve.vault.tree import NodeType

REPACK_BELOW = 0.5
# Interrupted writes older than this are garbage; younger ones may belong to
# a process that is just taking a lock.
LEFTOVER_AGE = 15 * 60.0


@dataclass
class PrunePlan:
    live: set[bytes] = field(default_factory=set)
    delete: list[str] = field(default_factory=list)
    repack: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)
    bytes_total: int = 0
    bytes_freed: int = 0
    blobs_repacked: int = 0
    # Packs kept because storage still locks them (or an index file naming them).
    locked: dict[str, datetime] = field(default_factory=dict)
    keep_index: set[str] = field(default_factory=set)
    # Database WAL behind each resource's oldest kept base backup (and leases).
    logs: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        until = max(self.locked.values(), default=None)
        return {
            "packs_deleted": len(self.delete) + len(self.unindexed),
            "packs_repacked": len(self.repack),
            "packs_locked": len(self.locked),
            "index_files_locked": len(self.keep_index),
            "locked_until": until.isoformat(timespec="seconds") if until else None,
            "blobs_live": len(self.live),
            "blobs_repacked": self.blobs_repacked,
            "bytes_before": self.bytes_total,
            "bytes_freed": self.bytes_freed,
            "wal_files_expired": sum(len(v) for v in self.logs.values()),
        }


def reachable_blobs(vault: Vault, forgetting: Collection[str] = ()) -> set[bytes]:
    """Every blob a point needs, except points in ``forgetting``.

    Stops if any needed blob is not in the index: then some pack's contents
    are unknown, and deleting "unreferenced" packs could delete live data.
    """
    live: set[bytes] = set()
    stack = [p.tree for p in vault.points() if p.id not in forgetting]
    while stack:
        tree_id = stack.pop()
        if tree_id in live:
            continue
        if tree_id not in vault.index:
            raise DamageError(f"tree {tree_id.hex()[:12]} is not in the index; prune stops")
        live.add(tree_id)
        for node in vault.read_tree(tree_id):
            if node.type is NodeType.DIR and node.subtree is not None:
                stack.append(node.subtree)
            live.update(node.content)
    missing = next((b for b in live if b not in vault.index), None)
    if missing is not None:
        raise DamageError(
            f"blob {missing.hex()[:12]} is needed but not in the index; prune stops "
            "(`reprieve vault rebuild-index` may recover it)"
        )
    return live


def plan_prune(vault: Vault, forgetting: Collection[str] = ()) -> PrunePlan:
    """What prune would do, as if the points in ``forgetting`` were gone."""
    if vault.index.damaged:
        raise DamageError(
            f"index file {next(iter(vault.index.damaged))[:12]} is damaged; "
            "run `reprieve vault rebuild-index` before pruning"
        )
    plan = PrunePlan(live=reachable_blobs(vault, forgetting))
    on_disk = {name.rsplit("/", 1)[-1]: size for name, size in vault.backend.list("packs")}
    plan.bytes_total = sum(on_disk.values())
    by_pack = vault.index.packs()
    # What each candidate frees, in bytes and blobs to move.
    gain: dict[str, tuple[int, int]] = {}
    for pack, blobs in sorted(by_pack.items()):
        size = on_disk.get(pack, 0)
        used = [(b, loc) for b, loc in blobs if b in plan.live]
        # Header and trailer count as used: repacking cannot shrink them.
        overhead = ENVELOPE_OVERHEAD + TRAILER.size + RECORD.size * len(blobs)
        used_bytes = overhead + sum(loc.length for _, loc in used)
        if not used:
            plan.delete.append(pack)
            gain[pack] = (size, 0)
        elif size and used_bytes < REPACK_BELOW * size:
            plan.repack.append(pack)
            gain[pack] = (size - used_bytes, len(used))
    plan.unindexed = sorted(set(on_disk) - set(by_pack))
    gain.update((p, (on_disk[p], 0)) for p in plan.unindexed)
    if vault.backend.can_lock and vault.config.lock:
        _keep_locked(vault, plan)
        plan.locked = {p: u for p, u in plan.locked.items() if p in on_disk}
    for pack in plan.delete + plan.repack + plan.unindexed:
        plan.bytes_freed += gain[pack][0]
        plan.blobs_repacked += gain[pack][1]
    plan.logs = _expired_logs(vault, forgetting)
    return plan


def _expired_logs(vault: Vault, forgetting: Collection[str]) -> dict[str, list[str]]:
    logs = expired_logs(vault, base_starts(vault.points(), forgetting))
    if vault.backend.can_lock and vault.config.lock:
        now = datetime.now(UTC)
        for resource, names in logs.items():
            prefix = f"logs/{resource}/"
            logs[resource] = [
                n for n in names if (vault.backend.locked_until(prefix + n) or now) <= now
            ]
    return {r: names for r, names in logs.items() if names}


def _keep_locked(vault: Vault, plan: PrunePlan) -> None:
    """Take out of the plan every pack storage would refuse to delete.

    With a governance bypass, locked packs that no point needs any more may
    go, but a locked index file that lists any pack still in use stays (it
    is what keeps the remaining points' data listed under lock), and so do
    all the packs it lists.
    """
    backend = vault.backend
    bypass = backend.bypass_governance
    candidates = set(plan.delete + plan.repack + plan.unindexed)
    dead = set(plan.delete)
    with ThreadPoolExecutor(16) as pool:
        files = sorted(vault.index.files)
        named_by: dict[str, set[str]] = {}
        for pack, named in vault.index.pack_files.items():
            for file in named:
                named_by.setdefault(file, set()).add(pack)
        for file, until in zip(
            files, pool.map(lambda f: backend.locked_until(f"index/{f}"), files), strict=True
        ):
            if until is None or (bypass and named_by.get(file, set()) <= dead):
                continue
            plan.keep_index.add(file)
            for pack in named_by.get(file, set()) & candidates:
                plan.locked[pack] = max(until, plan.locked.get(pack, until))
        rest = [] if bypass else sorted(candidates - set(plan.locked))
        for pack, until in zip(
            rest, pool.map(lambda p: backend.locked_until(pack_path(p)), rest), strict=True
        ):
            if until is not None:
                plan.locked[pack] = until
    for kept in (plan.delete, plan.repack, plan.unindexed):
        kept[:] = [p for p in kept if p not in plan.locked]


def run_prune(vault: Vault, plan: PrunePlan, progress: Progress | None = None) -> None:
    """Carry out ``plan``; afterwards ``plan.bytes_freed`` is the measured saving."""
    progress = progress or NullProgress()
    progress.start("prune", None)
    cipher = vault.cipher
    locations: dict[bytes, Location] = {b: loc for b, loc in vault.index.items() if b in plan.live}
    new_packs: dict[str, list[BlobEntry]] = {}
    builders: dict[int, PackBuilder] = {}

    def store(builder: PackBuilder) -> None:
        name, data = builder.finish(cipher)
        vault.backend.put(pack_path(name), data)
        new_packs[name] = builder.entries
        for e in builder.entries:
            locations[e.id] = Location(name, e.type, e.flags, e.offset, e.length, e.raw_length)

    repack = set(plan.repack)
    for pack, blobs in sorted(vault.index.packs().items()):
        if pack not in repack:
            continue
        data = vault.backend.get(pack_path(pack))
        for blob_id, loc in blobs:
            if blob_id not in plan.live or locations[blob_id].pack != pack:
                continue
            envelope = data[loc.offset : loc.offset + loc.length]
            vault.decode_blob(blob_id, loc.type, loc.flags, loc.raw_length, envelope)
            builder = builders.setdefault(loc.type, PackBuilder())
            builder.add(blob_id, loc.type, loc.flags, envelope, loc.raw_length)
            if builder.size >= vault.config.pack_size:
                store(builders.pop(loc.type))
        progress.advance(len(data))
    for builder in builders.values():
        store(builder)

    by_pack: dict[str, list[BlobEntry]] = {}
    for blob_id, loc in locations.items():
        by_pack.setdefault(loc.pack, []).append(
            BlobEntry(blob_id, loc.type, loc.flags, loc.offset, loc.length, loc.raw_length)
        )
    vault.replace_index(by_pack, keep=plan.keep_index)
    for pack in plan.delete + plan.repack + plan.unindexed:
        vault.backend.delete(pack_path(pack))
    delete_logs(vault, plan.logs)
    vault.backend.remove_leftovers(LEFTOVER_AGE)
    plan.bytes_freed = plan.bytes_total - sum(size for _, size in vault.backend.list("packs"))
    progress.finish()
