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

import json
import os
import re
import secrets
import socket
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import zstandard

from reprieve.errors import DamageError, NotFoundError, RefusedError, UsageError
from reprieve.vault.repository import Vault

SEGMENT = re.compile(r"[0-9A-F]{24}")
HISTORY = re.compile(r"[0-9A-F]{8}\.history")
BACKUP_LABEL = re.compile(r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup")
PIECE = re.compile(r"(?P<seg>[0-9A-F]{24})\.partial\.(?P<start>[0-9a-f]{8})-(?P<end>[0-9a-f]{8})")
SEGMENT_SIZE = 16 * 1024 * 1024
_STORED, _ZSTD = 0, 1


def is_log_name(name: str) -> bool:
    return any(p.fullmatch(name) for p in (SEGMENT, HISTORY, BACKUP_LABEL, PIECE))


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
        """Segment names restore can serve: whole ones, and streamed ones with bytes."""
        names = set(self.segments)
        names.update(s for s in self.pieces if self.partial_end(s) > 0)
        return sorted(names)


class LogStore:
    def __init__(self, vault: Vault, resource: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", resource):
            raise UsageError(f"invalid resource name {resource!r}")
        self.vault = vault
        self.resource = resource
        self.prefix = f"logs/{resource}/"

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

    def segment(self, name: str, listing: LogListing | None = None) -> bytes:
        """A whole segment, or one assembled from its streamed pieces."""
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
        data = bytearray(SEGMENT_SIZE)
        for piece in listing.pieces[name]:
            if piece.start >= end:
                break
            body = self.get(piece.name)
            if len(body) != piece.end - piece.start:
                raise DamageError(f"log {self.resource}/{piece.name} has the wrong length")
            data[piece.start : piece.end] = body
        return bytes(data)

    def delete(self, name: str) -> None:
        self.vault.backend.delete(self.prefix + name)


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


@contextmanager
def lease(vault: Vault, resource: str, first_wal: str) -> Iterator[None]:
    """Hold ``leases/<resource>/<id>`` while reading WAL from ``first_wal`` on.

    Expiry keeps every WAL file at or after the oldest live lease's start, so a
    restore, drill or standby never loses what it is about to read. A lease
    names its end; it is renewed while held, and one left by a killed process
    stops counting an hour later.
    """
    name = f"leases/{resource}/{secrets.token_hex(8)}"
    stop = threading.Event()

    def write() -> None:
        body = {
            "from": first_wal,
            "until": (datetime.now(UTC) + LEASE_SPAN).isoformat(),
            "by": f"{socket.gethostname()}:{os.getpid()}",
        }
        vault.backend.put(name, json.dumps(body).encode())

    def renew() -> None:
        while not stop.wait(LEASE_REFRESH_S):
            write()

    write()
    renewer = threading.Thread(target=renew, name="wal-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        vault.backend.delete(name)


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
    """Send every log file ``dst`` lacks, re-encrypted under its key: (files, bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    have = {name for name, _ in dst.names()}
    wanted = [name for name, _ in src.names() if name not in have]

    def one(name: str) -> int:
        data = src.get(name)
        dst.put(name, data)
        return len(data)

    with ThreadPoolExecutor(threads, thread_name_prefix="log-copy") as pool:
        sizes = list(pool.map(one, wanted))
    return len(sizes), sum(sizes)
