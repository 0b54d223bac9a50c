"""Getting WAL into the vault: ``wal push`` with a bounded spool, and streaming.

Archive mode: PostgreSQL runs ``archive_command`` once per finished WAL
file. ``wal push`` stores the file in the vault; when the vault cannot take
it (unreachable, full, refusing), the file goes to a local spool instead and
the command still succeeds, so PostgreSQL recycles its copy. The spool is
bounded (``--spool-max``): past the bound, the file is dropped, the drop is
recorded in ``<spool>/dropped.jsonl``, and a warning goes to PostgreSQL's
log. A database whose archive is down must not fill its own disk and stop
(pgBackRest's issues #1848 and #2629); the dropped file leaves a gap that
``check`` reports and that the next base backup closes. The next push, or
``wal ship``, sends spooled files first, oldest first.

Stream mode: ``pg_receivewal`` (with a replication slot, optionally
``--synchronous``) writes WAL into the spool as the server produces it. A
shipper sends each finished file whole, and the file still being written as
pieces: every ``SHIP_EVERY_S`` the bytes written since the last piece. That
is what keeps the RPO at the streaming delay plus a fraction of a second.

The spool's files are written to a temporary name, fsynced and renamed, so a
killed process leaves whole files or none; a spool holds nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from reprieve.errors import RefusedError, ReprieveError, UsageError
from reprieve.home import home
from reprieve.sources.postgres import pg_tool, replication_error
from reprieve.vault.logs import PIECE, LogStore, is_log_name, piece_name
from reprieve.vault.repository import Vault

DEFAULT_SPOOL_MAX = 1 << 30
SHIP_EVERY_S = 0.2
TMP = ".tmp-"


def default_spool(resource: str) -> Path:
    return home() / "spool" / resource


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f"{TMP}{path.name}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class PushResult:
    name: str
    stored: bool  # in the vault (False: spooled or dropped)
    spooled: bool = False
    dropped: bool = False
    shipped_from_spool: list[str] = field(default_factory=list)
    waiting: int = 0
    warning: str | None = None


class Spool:
    def __init__(self, folder: Path, limit: int = DEFAULT_SPOOL_MAX) -> None:
        self.folder = folder
        self.limit = limit

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if is_log_name(p.name))

    def used(self) -> int:
        total = 0
        for path in self.files():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def add(self, name: str, data: bytes) -> bool:
        """Keep a file for later; False (and a record) when the bound would be passed."""
        if self.used() + len(data) > self.limit:
            self.record_drop(name, f"spool full ({self.used()} of {self.limit} bytes)")
            return False
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self.folder / name, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                (self.folder / f"{TMP}{name}").unlink()
            self.record_drop(name, f"cannot write the spool: {exc.strerror}")
            return False
        return True

    def record_drop(self, name: str, reason: str) -> None:
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / "dropped.jsonl", "a") as f:
                when = datetime.now(UTC).isoformat(timespec="seconds")
                f.write(json.dumps({"time": when, "file": name, "reason": reason}) + "\n")

    def dropped(self) -> list[dict[str, str]]:
        path = self.folder / "dropped.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ship_spool(store: LogStore, spool: Spool) -> list[str]:
    """Send every spooled file, oldest first; stops at the first failure (raised)."""
    shipped = []
    for path in spool.files():
        store.put(path.name, path.read_bytes())
        path.unlink()
        shipped.append(path.name)
    return shipped


def push(open_store: Callable[[], LogStore], path: Path, spool: Spool) -> PushResult:
    """archive_command: the vault if it takes the file, else the bounded spool."""
    name = path.name
    if not is_log_name(name):
        raise UsageError(f"{name!r} is not a WAL file name; archive_command passes %p")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        store = open_store()
        shipped = ship_spool(store, spool)
        store.put(name, data)
        return PushResult(name, stored=True, shipped_from_spool=shipped)
    except RefusedError:
        raise  # a different file under an archived name: PostgreSQL must hear of it
    except ReprieveError as exc:
        reason = str(exc)
    if spool.add(name, data):
        waiting = len(spool.files())
        return PushResult(
            name,
            stored=False,
            spooled=True,
            waiting=waiting,
            warning=f"vault unavailable ({reason}); {name} spooled in {spool.folder} "
            f"({waiting} file(s) waiting)",
        )
    return PushResult(
        name,
        stored=False,
        dropped=True,
        warning=f"vault unavailable ({reason}) and WAL spool {spool.folder} is full: "
        f"{name} DROPPED; point-in-time recovery has a gap until the next base backup",
    )


# -- streaming ---------------------------------------------------------------


class Shipper:
    """Sends what pg_receivewal writes: whole files, and pieces of the current one."""

    def __init__(self, store: LogStore, folder: Path) -> None:
        self.store = store
        self.folder = folder
        listing = store.listing()
        self.shipped = {seg: listing.partial_end(seg) for seg in listing.pieces}
        # The pieces of each segment, so that once it is whole they go without a listing.
        self.pieces = {seg: [p.name for p in ps] for seg, ps in listing.pieces.items()}
        self.whole = set(listing.segments)
        self.last_ship = 0.0
        self.pieces_sent = 0

    def once(self) -> int:
        """One pass over the folder; returns how many objects were sent."""
        sent = 0
        for path in sorted(self.folder.iterdir()):
            name = path.name
            if name.endswith(".partial") and is_log_name(name[: -len(".partial")]):
                sent += self._piece(path, name[: -len(".partial")])
            elif is_log_name(name) and not PIECE.fullmatch(name):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                self.store.put(name, data)
                self.whole.add(name)
                self._forget_pieces(name)
                path.unlink()
                sent += 1
        if sent:
            self.last_ship = time.time()
        return sent

    def _piece(self, path: Path, segment: str) -> int:
        """Ship what was written to the segment since the last piece.

        The file is read twice from the last piece's end, and only what both reads
        agree on goes: a read racing pg_receivewal's write can see a later page
        written before an earlier one, and a piece, once stored, never changes.
        Trailing zeros are left for the next piece (restore pads with zeros).
        """
        if segment in self.whole:
            return 0
        start = self.shipped.get(segment, 0)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                first = f.read()
                f.seek(start)
                second = f.read(len(first))
        except FileNotFoundError:
            return 0
        data = first[: _agreed(first, second)].rstrip(b"\0")
        if not data:
            return 0
        end = start + len(data)
        name = piece_name(segment, start, end)
        self.store.put(name, data)
        self.pieces.setdefault(segment, []).append(name)
        self.shipped[segment] = end
        self.pieces_sent += 1
        return 1

    def _forget_pieces(self, segment: str) -> None:
        """A segment that arrived whole no longer needs its pieces (where storage lets go)."""
        self.shipped.pop(segment, None)
        for name in self.pieces.pop(segment, []):
            with contextlib.suppress(ReprieveError):
                self.store.delete(name)


def _agreed(a: bytes, b: bytes) -> int:
    """Length of the common prefix of two reads."""
    if a == b:
        return len(a)
    limit, block, i = min(len(a), len(b)), 1 << 16, 0
    while i < limit and a[i : i + block] == b[i : i + block]:
        i += block
    while i < limit and a[i] == b[i]:
        i += 1
    return i


class Streamer:
    """pg_receivewal into a spool, restarted when it stops, and a shipper behind it."""

    def __init__(
        self,
        vault: Vault,
        resource: str,
        dsn: str,
        folder: Path,
        synchronous: bool = False,
        slot: str | None = None,
    ) -> None:
        self.store = LogStore(vault, resource)
        self.dsn = dsn
        self.folder = folder
        self.synchronous = synchronous
        self.slot = slot or f"reprieve_{resource.replace('-', '_').replace('.', '_')}".lower()
        self.stop = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def create_slot(self) -> None:
        done = subprocess.run(
            [
                pg_tool("pg_receivewal"),
                f"--dbname={self.dsn}",
                f"--slot={self.slot}",
                "--create-slot",
                "--if-not-exists",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise replication_error(done.stderr, self.dsn)

    def _start(self) -> subprocess.Popen[bytes]:
        command = [
            pg_tool("pg_receivewal"),
            f"--dbname={self.dsn}",
            f"--directory={self.folder}",
            f"--slot={self.slot}",
            "--no-loop",
            "--status-interval=1",
        ]
        if self.synchronous:
            command.append("--synchronous")
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def run(self, on_ship: Callable[[int], None] | None = None) -> None:
        """Stream and ship until ``stop`` is set; the vault gets everything received."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.create_slot()
        shipper = Shipper(self.store, self.folder)
        backoff = 0.5
        try:
            while not self.stop.is_set():
                if self.process is None or self.process.poll() is not None:
                    if self.process is not None:
                        err = b""
                        if self.process.stderr is not None:
                            err = self.process.stderr.read()
                            self.process.stderr.close()
                        self.error = str(
                            replication_error(err.decode("utf-8", "replace"), self.dsn)
                        )
                        self.stop.wait(backoff)
                        backoff = min(backoff * 2, 10.0)
                    self.process = self._start()
                sent = shipper.once()
                if sent:
                    backoff = 0.5
                    if on_ship is not None:
                        on_ship(sent)
                self.stop.wait(SHIP_EVERY_S)
        finally:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process is not None and self.process.stderr is not None:
                self.process.stderr.close()
            # What arrived before the stop still goes to the vault.
            shipper.once()
