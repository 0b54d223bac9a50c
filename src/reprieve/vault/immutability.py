"""Immutability: retention dates, legal holds, and the audit trail of bypasses.

A locked vault (``vault init --lock governance|compliance``) gives every
point a retention date within the vault's bounds. Before a point is saved,
every object it needs (its packs, the index files that list them, the
config and the keys) is locked at least until that date, so a pack reused
by a new point has its date extended. The point itself is written locked.

On S3 the storage enforces this (Object Lock): compliance dates cannot be
shortened or removed by anyone, governance dates only with an explicit
bypass. A folder cannot lock files, so there reprieve alone enforces the
same rules, which protects against mistakes but not against someone who can
delete the files.

Legal holds are ``holds/<point name>`` records (reason, who, when) that
block `forget` until released; on S3 the point's objects also carry an S3
legal hold. Governance bypasses leave an ``audit/`` record.
"""

from __future__ import annotations

import getpass
import json
import secrets
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reprieve.errors import DamageError, NotFoundError, RefusedError, UsageError
from reprieve.vault.backends.base import Backend, whole_second
from reprieve.vault.packs import pack_path
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault
from reprieve.vault.tree import NodeType

LOCK_MODES = ("governance", "compliance")
HOLD_AAD = b"hold"
AUDIT_AAD = b"audit"
LOCK_THREADS = 16


def check_bucket_lockable(backend: Backend) -> None:
    """Refuse to create a locked vault where storage cannot hold it."""
    if not backend.can_lock:
        return
    settings = backend.object_lock()
    if settings is None:
        raise UsageError(
            f"bucket of {backend.location} has no S3 Object Lock; create the bucket with "
            "Object Lock enabled (it cannot be added later), or init without --lock"
        )
    if settings.get("Rule"):
        raise UsageError(
            f"bucket of {backend.location} has a default retention rule, which would lock "
            "reprieve's lock files too; remove the bucket's default rule (reprieve dates "
            "every object itself)"
        )


def retain_until(vault: Vault, point_time: datetime, retain: timedelta | None) -> datetime | None:
    """The retention date of a new point, checked against the vault's bounds."""
    config = vault.config
    if not config.lock:
        if retain is not None:
            raise UsageError(
                f"the vault at {vault.backend.location} is not locked, so it cannot retain "
                "points; create a vault with `vault init --lock governance|compliance`"
            )
        return None
    span = retain if retain is not None else timedelta(seconds=config.min_retention_s)
    if span.total_seconds() < config.min_retention_s:
        raise UsageError(
            f"retention {format_span(span)} is below the vault's minimum "
            f"{format_span(timedelta(seconds=config.min_retention_s))}"
        )
    if config.max_retention_s and span.total_seconds() > config.max_retention_s:
        raise UsageError(
            f"retention {format_span(span)} is above the vault's maximum "
            f"{format_span(timedelta(seconds=config.max_retention_s))}"
        )
    return whole_second(point_time + span)


def copy_retention(vault: Vault, point: Point, retain: timedelta | None) -> datetime | None:
    """The retention date of a copy of ``point`` in ``vault``, counted from now.

    An explicit ``retain`` must fit the target's bounds; otherwise the copy
    keeps its source's date, but at least the target's minimum from now.
    """
    now = datetime.now(UTC)
    config = vault.config
    if retain is not None or not config.lock:
        return retain_until(vault, now, retain)
    low = now + timedelta(seconds=config.min_retention_s)
    until = max(point.retain_until or low, low)
    if config.max_retention_s:
        until = min(until, now + timedelta(seconds=config.max_retention_s))
    return whole_second(until)


def format_span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def point_objects(vault: Vault, point: Point) -> set[str]:
    """Every object ``point`` needs: packs, the index files listing them,
    the config, and the keys."""
    packs: set[str] = set()
    stack, seen = [point.tree], set()
    while stack:
        tree_id = stack.pop()
        if tree_id in seen:
            continue
        seen.add(tree_id)
        for blob_id in [tree_id, *_children(vault, tree_id, stack)]:
            loc = vault.index.get(blob_id)
            if loc is None:
                raise NotFoundError(f"blob {blob_id.hex()[:12]} of point {point.short_id} is lost")
            packs.add(loc.pack)
    names = {pack_path(p) for p in packs}
    for pack in packs:
        names.update(f"index/{f}" for f in vault.index.pack_files.get(pack, ()))
    names.add("config")
    names.update(name for name, _ in vault.backend.list("keys"))
    return names


def _children(vault: Vault, tree_id: bytes, stack: list[bytes]) -> list[bytes]:
    blobs: list[bytes] = []
    for node in vault.read_tree(tree_id):
        if node.type is NodeType.DIR and node.subtree is not None:
            stack.append(node.subtree)
        blobs.extend(node.content)
    return blobs


def _each(names: Iterable[str], action: Any) -> None:
    with ThreadPoolExecutor(LOCK_THREADS) as pool:
        for _ in pool.map(action, sorted(names)):
            pass


def lock_point_data(vault: Vault, point: Point) -> int:
    """Lock what ``point`` needs until its retention date; call before saving it.

    Returns how many objects were checked (0 where storage cannot lock).
    """
    until = point.retain_until
    if until is None or until <= datetime.now(UTC):
        return 0
    if not vault.backend.can_lock or not vault.config.lock:
        return 0
    names = point_objects(vault, point)

    def retain(name: str) -> None:
        try:
            vault.backend.retain(name, until)
        except NotFoundError:
            # A concurrent backup merged its checkpoint index files away;
            # the merged file lists the same packs.
            if not name.startswith("index/"):
                raise

    _each(names, retain)
    return len(names)


# -- legal holds -----------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    point: str
    reason: str
    time: str
    by: str


def holds(vault: Vault, strict: bool = False) -> dict[str, Hold]:
    """Every legal hold, by point name.

    An unreadable hold record is skipped for listings; with ``strict`` (before
    forgetting anything) it stops the command, since it might hold anything.
    """
    found: dict[str, Hold] = {}
    for name, _ in vault.backend.list("holds"):
        try:
            body = json.loads(vault.cipher.open(vault.backend.get(name), HOLD_AAD, name))
            found[body["point"]] = Hold(**body)
        except (DamageError, ValueError, KeyError, TypeError) as exc:
            if strict:
                raise DamageError(
                    f"legal hold record {name} is unreadable, so nothing is forgotten; "
                    "restore or remove it"
                ) from exc
    return found


def place_hold(vault: Vault, point: Point, reason: str) -> Hold:
    if not reason.strip():
        raise UsageError("a legal hold needs a --reason")
    hold = Hold(point.id, reason, _now(), _who())
    data = vault.cipher.seal(json.dumps(asdict(hold)).encode(), HOLD_AAD)
    vault.backend.put(f"holds/{point.id}", data)
    if vault.backend.can_lock and vault.config.lock:
        names = point_objects(vault, point) | {f"points/{point.id}"}
        _each(names, lambda name: vault.backend.hold(name, True))
    return hold


def release_hold(vault: Vault, point: Point) -> Hold:
    current = holds(vault)
    hold = current.pop(point.id, None)
    if hold is None:
        raise NotFoundError(f"point {point.short_id} has no legal hold")
    if vault.backend.can_lock and vault.config.lock:
        still: set[str] = set()
        for other in current:
            held = vault.load_point(other)
            still |= point_objects(vault, held) | {f"points/{held.id}"}
        names = (point_objects(vault, point) | {f"points/{point.id}"}) - still
        _each(names, lambda name: vault.backend.hold(name, False))
    vault.backend.delete(f"holds/{point.id}")
    return hold


# -- what forget may remove ----------------------------------------------


def blocker(
    vault: Vault, point: Point, held: dict[str, Hold], now: datetime, bypass: bool
) -> str | None:
    """Why ``point`` cannot be forgotten now, or None."""
    if point.id in held:
        return f"on legal hold: {held[point.id].reason}"
    if point.retain_until is not None and point.retain_until > now:
        if bypass and vault.config.lock == "governance":
            return None
        return f"retained until {point.summary()['retain_until']} ({vault.config.lock or 'lock'})"
    return None


def check_bypass(vault: Vault) -> None:
    """Only governance retention can be bypassed."""
    if not vault.config.lock:
        raise UsageError("--bypass-governance applies to locked vaults; this one is not locked")
    if vault.config.lock != "governance":
        mode = vault.config.lock
        raise RefusedError(
            f"--bypass-governance applies to governance-mode vaults only; this vault is {mode}"
            + (", whose retention no one can shorten" if mode == "compliance" else "")
        )
    vault.backend.bypass_governance = True


# -- audit -----------------------------------------------------------------


def audit(vault: Vault, action: str, **detail: Any) -> dict[str, Any]:
    """Record ``action`` in the vault's audit trail; returns the record."""
    record = {"time": _now(), "by": _who(), "action": action, **detail}
    data = vault.cipher.seal(json.dumps(record, sort_keys=True).encode(), AUDIT_AAD)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    until = None
    if vault.config.lock:
        until = datetime.now(UTC) + timedelta(seconds=max(vault.config.min_retention_s, 86400))
    vault.backend.put(f"audit/{stamp}-{secrets.token_hex(4)}", data, until)
    return record


def audit_records(vault: Vault) -> list[dict[str, Any]]:
    records = []
    for name, _ in vault.backend.list("audit"):
        records.append(json.loads(vault.cipher.open(vault.backend.get(name), AUDIT_AAD, name)))
    return sorted(records, key=lambda r: str(r["time"]))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
