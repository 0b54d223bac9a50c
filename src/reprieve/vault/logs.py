"""Continuous database logs: the ``logs/<resource>/`` area of a vault.

A database's write-ahead log is kept beside its points, one object per log
file under the name the database gives it::

    logs/<resource>/000000010000000000000003           a whole WAL segment
    logs/<resource>/00000002.history                   a timeline history file
    logs/<resource>/000000010000000000000004.partial.00000000-0001a2c8
                                                       bytes [start, end) of a
                                                       segment still being written

Each object is an envelope (associated data ``log/<resource>/<name>``, so
an object cannot be passed off under another name) around one flag byte
(0 stored, 1 zstd) and the file's bytes. Objects are written once: pushing
a name again succeeds only if the bytes are the same (a database retries
``archive_command`` after a crash) and is refused otherwise. On a locked
vault each object is locked for the vault's minimum retention when written.

A segment that is still being streamed arrives as pieces, each holding the
bytes written since the previous one. Unwritten bytes of a segment are
zeros, so the pieces, laid end to end from offset 0 and padded with zeros,
are the segment as far as it was written: what restore replays after a
crash. Once the whole segment arrives, its pieces are no longer read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import zstandard

from reprieve.errors import DamageError, NotFoundError, RefusedError, ReprieveError, UsageError
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault

SEGMENT = re.compile(r"[0-9A-F]{24}")
HISTORY = re.compile(r"[0-9A-F]{8}\.history")
BACKUP_LABEL = re.compile(r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup")
PIECE = re.compile(r"(?P<seg>[0-9A-F]{24})\.partial\.(?P<start>[0-9a-f]{8})-(?P<end>[0-9a-f]{8})")
# A promoted server archives the last segment of its old timeline under this name.
ARCHIVED_PARTIAL = re.compile(r"[0-9A-F]{24}\.partial")
SEGMENT_SIZE = 16 * 1024 * 1024
_STORED, _ZSTD = 0, 1


def is_log_name(name: str) -> bool:
    patterns = (SEGMENT, HISTORY, BACKUP_LABEL, PIECE, ARCHIVED_PARTIAL)
    return any(p.fullmatch(name) for p in patterns)


def piece_name(segment: str, start: int, end: int) -> str:
    return f"{segment}.partial.{start:08x}-{end:08x}"


@dataclass(frozen=True)
class Piece:
    start: int
    end: int
    name: str


@dataclass
class LogListing:
    """What the vault holds for one resource, by kind of file."""

    segments: dict[str, int]  # segment name -> stored size
    histories: set[str]
    pieces: dict[str, list[Piece]]  # segment name -> its pieces, by start
    others: set[str]

    def partial_end(self, segment: str) -> int:
        """How far the segment's pieces reach contiguously from offset 0."""
        end = 0
        for piece in self.pieces.get(segment, []):
            if piece.start > end:
                break
            end = max(end, piece.end)
        return end

    def available(self) -> list[str]:
        """Segment names restore can serve: whole ones, and the segment still being
        streamed, the newest of its timeline. A segment older than that which only
        ever arrived in pieces was cut short (its streamer lost it): not served, so
        that `check` and restore call it the gap it is."""
        names = set(self.segments)
        newest: dict[str, str] = {}
        for name in names:
            newest[name[:8]] = max(newest.get(name[:8], name), name)
        for seg in self.pieces:
            if self.partial_end(seg) > 0 and seg not in names and seg >= newest.get(seg[:8], seg):
                names.add(seg)
        return sorted(names)


class LogStore:
    def __init__(self, vault: Vault, resource: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", resource):
            raise UsageError(f"invalid resource name {resource!r}")
        self.vault = vault
        self.resource = resource
        self.prefix = f"logs/{resource}/"
        self._cache: dict[str, bytes] = {}
        self._cached_segment = ""
        self._cache_lock = threading.Lock()

    def _aad(self, name: str) -> bytes:
        return f"log/{self.resource}/{name}".encode()

    def seal(self, name: str, data: bytes) -> bytes:
        packed = zstandard.ZstdCompressor(level=1).compress(data)
        body = bytes([_ZSTD]) + packed if len(packed) < len(data) else bytes([_STORED]) + data
        return self.vault.cipher.seal(body, self._aad(name))

    def open(self, name: str, envelope: bytes) -> bytes:
        body = self.vault.cipher.open(envelope, self._aad(name), f"log {self.resource}/{name}")
        if body[:1] == bytes([_ZSTD]):
            try:
                return zstandard.ZstdDecompressor().decompress(body[1:])
            except zstandard.ZstdError as exc:
                raise DamageError(f"log {self.resource}/{name} does not decompress") from exc
        return body[1:]

    def _retention(self) -> datetime | None:
        span = self.vault.config.min_retention_s
        if not self.vault.config.lock or not span:
            return None
        return datetime.now(UTC) + timedelta(seconds=span)

    def put(self, name: str, data: bytes, retain_until: datetime | None = None) -> bool:
        """Store one log file; False if the same bytes were already there."""
        if not is_log_name(name):
            raise UsageError(f"{name!r} is not a WAL file name")
        key = self.prefix + name
        if self.vault.backend.exists(key):
            if self.get(name) == data:
                return False
            raise RefusedError(
                f"{self.resource}/{name} is already in the vault with other contents; "
                "refusing to overwrite archived WAL"
            )
        self.vault.backend.put(key, self.seal(name, data), retain_until or self._retention())
        return True

    def get(self, name: str) -> bytes:
        try:
            envelope = self.vault.backend.get(self.prefix + name)
        except NotFoundError:
            raise NotFoundError(f"WAL file {name} of {self.resource} is not in the vault") from None
        return self.open(name, envelope)

    def exists(self, name: str) -> bool:
        return self.vault.backend.exists(self.prefix + name)

    def names(self) -> list[tuple[str, int]]:
        return [
            (key.removeprefix(self.prefix), size)
            for key, size in self.vault.backend.list(self.prefix.rstrip("/"))
            if key.startswith(self.prefix)
        ]

    def listing(self) -> LogListing:
        listing = LogListing({}, set(), {}, set())
        for name, size in self.names():
            if SEGMENT.fullmatch(name):
                listing.segments[name] = size
            elif HISTORY.fullmatch(name):
                listing.histories.add(name)
            elif m := PIECE.fullmatch(name):
                piece = Piece(int(m["start"], 16), int(m["end"], 16), name)
                listing.pieces.setdefault(m["seg"], []).append(piece)
            else:
                listing.others.add(name)
        for pieces in listing.pieces.values():
            pieces.sort(key=lambda p: (p.start, p.end))
        return listing

    def segment(
        self, name: str, listing: LogListing | None = None, size: int | None = None
    ) -> bytes:
        """A whole segment, or one assembled from its streamed pieces: ``size`` bytes
        (the cluster's segment size; by default read from the segment's first page
        header), zeros after what was written."""
        if listing is None:
            try:  # the common case, one request: the segment arrived whole
                return self.get(name)
            except NotFoundError:
                listing = self.listing()
        if name in listing.segments:
            return self.get(name)
        end = listing.partial_end(name)
        if end == 0:
            raise NotFoundError(f"WAL segment {name} of {self.resource} is not in the vault")
        bodies = []
        for piece in listing.pieces[name]:
            if piece.start >= end:
                break
            body = self._piece(piece.name)
            if len(body) != piece.end - piece.start:
                raise DamageError(f"log {self.resource}/{piece.name} has the wrong length")
            bodies.append((piece.start, body))
        data = bytearray(size or _segment_size(bodies[0][1]))
        for start, body in bodies:
            data[start : start + len(body)] = body
        return bytes(data)

    def _piece(self, name: str) -> bytes:
        """Pieces never change: a standby asking for the growing segment every second
        fetches only the new ones. Kept for the newest segment only."""
        segment = name[:24]
        with self._cache_lock:
            if self._cached_segment != segment:
                self._cache.clear()
                self._cached_segment = segment
            found = self._cache.get(name)
        if found is None:
            found = self.get(name)
            with self._cache_lock:
                if self._cached_segment == segment:
                    self._cache[name] = found
        return found

    def delete(self, name: str) -> None:
        self.vault.backend.delete(self.prefix + name)


def _segment_size(first: bytes) -> int:
    """xlp_seg_size from a segment's long page header (offset 32, little-endian on the
    platforms PostgreSQL runs on here); 16 MiB if it does not look like one."""
    if len(first) >= 36:
        size = int.from_bytes(first[32:36], "little")
        if size >= 1 << 20 and size & (size - 1) == 0 and size <= 1 << 30:
            return size
    return SEGMENT_SIZE


def resources_with_logs(vault: Vault) -> list[str]:
    found = set()
    for key, _ in vault.backend.list("logs"):
        parts = key.split("/")
        if len(parts) >= 3:
            found.add(parts[1])
    return sorted(found)


# -- expiry and leases ----------------------------------------------------------

LEASE_SPAN = timedelta(hours=1)
LEASE_REFRESH_S = 600.0


def _position(name: str) -> str:
    """A WAL file's place in the log regardless of timeline: log id and segment."""
    return name[8:24]


class Lease:
    """``leases/<resource>/<id>``: WAL from ``first_wal`` on is being read.

    Expiry keeps every WAL file at or after the oldest live lease's start, so a
    restore, drill or standby never loses what it is about to read. A lease
    names its end and is renewed while held; one left by a killed process
    stops counting an hour later. A standby moves its lease forward as it
    replays, so it does not hold WAL back for ever.
    """

    def __init__(self, vault: Vault, resource: str, first_wal: str) -> None:
        self.vault = vault
        self.name = f"leases/{resource}/{secrets.token_hex(8)}"
        self.first_wal = first_wal
        self.stop = threading.Event()

    def write(self) -> None:
        body = {
            "from": self.first_wal,
            "until": (datetime.now(UTC) + LEASE_SPAN).isoformat(),
            "by": f"{socket.gethostname()}:{os.getpid()}",
        }
        self.vault.backend.put(self.name, json.dumps(body).encode())

    def move(self, first_wal: str) -> None:
        if _position(first_wal) > _position(self.first_wal):
            self.first_wal = first_wal
            self.write()

    def _renew(self) -> None:
        while not self.stop.wait(LEASE_REFRESH_S):
            # A failed renewal is tried again next time; the lease has an hour.
            with contextlib.suppress(ReprieveError):
                self.write()


@contextmanager
def lease(vault: Vault, resource: str, first_wal: str) -> Iterator[Lease]:
    """Hold a :class:`Lease` for the duration of the block."""
    held = Lease(vault, resource, first_wal)
    held.write()
    renewer = threading.Thread(target=held._renew, name="wal-lease", daemon=True)
    renewer.start()
    try:
        yield held
    finally:
        held.stop.set()
        renewer.join()
        with contextlib.suppress(ReprieveError):
            vault.backend.delete(held.name)


def leased_from(vault: Vault, resource: str) -> str | None:
    """The oldest WAL a live lease still needs, if any."""
    now = datetime.now(UTC)
    oldest = None
    for key, _ in vault.backend.list(f"leases/{resource}"):
        try:
            body = json.loads(vault.backend.get(key))
            if datetime.fromisoformat(body["until"]) < now:
                continue
            first = str(body["from"])
        except (NotFoundError, ValueError, KeyError):
            continue
        if oldest is None or _position(first) < _position(oldest):
            oldest = first
    return oldest


def base_starts(points: Iterable[Point], forgetting: Collection[str] = ()) -> dict[str, str]:
    """Per database resource, the first WAL file of its oldest base backup."""
    starts: dict[str, str] = {}
    for point in points:
        meta = point.stats.get("postgres")
        if point.kind != "postgres" or point.id in forgetting or not meta:
            continue
        first = str(meta["start_wal"])
        if point.resource not in starts or _position(first) < _position(starts[point.resource]):
            starts[point.resource] = first
    return starts


def expired_logs(vault: Vault, base_starts: dict[str, str]) -> dict[str, list[str]]:
    """Per resource, the WAL files behind its oldest kept base backup and every lease.

    ``base_starts`` maps each database resource to the first WAL file of its
    oldest remaining base backup. A resource with WAL but no base backup keeps
    everything: its first base backup may be on its way. History files stay.
    """
    out: dict[str, list[str]] = {}
    for resource in resources_with_logs(vault):
        first = base_starts.get(resource)
        if first is None:
            continue
        leased = leased_from(vault, resource)
        if leased is not None and _position(leased) < _position(first):
            first = leased
        store = LogStore(vault, resource)
        old = [
            name
            for name, _ in store.names()
            if not HISTORY.fullmatch(name) and _position(name) < _position(first)
        ]
        if old:
            out[resource] = old
    return out


def delete_logs(vault: Vault, expired: Mapping[str, Collection[str]]) -> int:
    count = 0
    for resource, names in expired.items():
        store = LogStore(vault, resource)
        for name in names:
            store.delete(name)
            count += 1
    return count


def copy_logs(src: LogStore, dst: LogStore, threads: int = 4) -> tuple[int, int]:
    """Send the log files ``dst`` lacks, re-encrypted under its key: (files, bytes).

    Skipped: pieces of segments the source holds whole, files that vanish
    while copying (pieces a streamer just replaced), and files behind the
    target's oldest base backup, which its expiry already let go.
    """
    from concurrent.futures import ThreadPoolExecutor

    have = {name for name, _ in dst.names()}
    names = [name for name, _ in src.names()]
    whole = {name for name in names if SEGMENT.fullmatch(name)}
    first = base_starts(dst.vault.points(dst.resource)).get(dst.resource)
    wanted = []
    for name in names:
        m = PIECE.fullmatch(name)
        if name in have or (m and m["seg"] in whole):
            continue
        if first and not HISTORY.fullmatch(name) and _position(name) < _position(first):
            continue
        wanted.append(name)

    def one(name: str) -> int:
        try:
            data = src.get(name)
        except NotFoundError:
            return -1
        dst.put(name, data)
        return len(data)

    with ThreadPoolExecutor(threads, thread_name_prefix="log-copy") as pool:
        sizes = [n for n in pool.map(one, wanted) if n >= 0]
    return len(sizes), sum(sizes)
