"""Serving WAL from the vault to a recovering cluster, across the OS-user line.

The recovering cluster runs as the database's OS user; its
``restore_command`` is walfetch.sh. The feeder runs in the reprieve process
(restore, or the standby follower), reads the vault, and serves through an
inbox of three folders::

    INBOX/            reprieve's (group: the database user's): NAME.none
                      answers, feeder.alive (touched every second), and files
                      being written
    INBOX/ready/      the database user's: WAL files, whole, theirs to move
    INBOX/requests/   the database user's: NAME.want, written by walfetch.sh

A WAL file is written in INBOX, given to the database user, and renamed
into ready/, so walfetch.sh moves it into ``pg_wal`` rather than copying
16 MiB per segment. reprieve, possibly root, only ever writes into a folder
of its own, renames into ready/ (which follows no links), and only lists
and unlinks in the other two. Files are fetched ahead of replay with
``threads`` parallel fetches (prefetch) and on request, and a request the
vault cannot answer gets ``NAME.none``. Once a segment is asked for, the
ones before it are deleted, and at most ``window`` segments are fetched
ahead, so the inbox stays small.

Every segment asked for and every one the vault lacked are recorded: a
request answered ``none`` for a segment older than the newest one the vault
holds is a gap, and restore reports it rather than accept a short recovery.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from reprieve.errors import UsageError
from reprieve.sources import walhelper
from reprieve.sources.postgres import chown_to, owner_ids, segment_number, write_new
from reprieve.vault.logs import HISTORY, SEGMENT, LogListing, LogStore

POLL_S = 0.005
ALIVE_EVERY_S = 1.0


def helper_python() -> str:
    """An interpreter the database's OS user can run: the system's, if any."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("python3") or sys.executable


FETCH_SCRIPT = Path(__file__).with_name("walfetch.sh")


def install_helper(folder: Path, os_user: str | None) -> Path:
    """The archive spool for ``wal setup``: a folder ``os_user`` owns, with walhelper.py."""
    folder.mkdir(parents=True, exist_ok=True)
    chown_to(folder, os_user)
    folder.chmod(0o750)
    target = folder / "walhelper.py"
    write_new(target, Path(walhelper.__file__).read_bytes(), os_user, 0o644)
    return target


def install_fetch(inbox: Path, os_user: str | None, standby: bool = False) -> str:
    """Make the inbox (see the module's docstring); the restore_command that reads it."""
    if inbox.is_symlink():
        raise UsageError(f"{inbox} is a symbolic link")
    inbox.mkdir(parents=True, exist_ok=True)
    inbox.chmod(0o750)
    ids = owner_ids(os_user)
    if ids is not None:
        os.chown(inbox, 0, ids[1])
    for name in ("requests", "ready"):
        theirs = inbox / name
        theirs.mkdir(exist_ok=True)
        chown_to(theirs, os_user)
        theirs.chmod(0o700)
    script = inbox / FETCH_SCRIPT.name
    write_new(script, FETCH_SCRIPT.read_bytes(), None, 0o644)
    # A standby waits for WAL that is not there yet; a restore must not end early.
    return f"/bin/sh {script} %f %p {inbox} {'standby' if standby else 'restore'}"


class Feeder:
    def __init__(
        self,
        store: LogStore,
        inbox: Path,
        seg_size: int,
        first: str | None,
        follow: bool = False,
        window: int = 16,
        threads: int = 4,
        os_user: str | None = None,
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.requests = inbox / "requests"
        self.ready = inbox / "ready"
        self.seg_size = seg_size
        self.follow = follow
        self.window = window
        self.os_user = os_user
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="wal-prefetch")
        self.listing: LogListing = store.listing()
        self.available = self.listing.available()  # kept: step() runs every few ms
        self.listed_at = time.monotonic()
        self.inflight: dict[str, Future[None]] = {}
        self.fetched: set[str] = set()
        self.waiting: set[str] = set()  # requests answered when their fetch completes
        self.asked: list[str] = []
        self.missing: list[str] = []
        self.served = 0
        self.bytes = 0
        self.newest_asked: str | None = None
        self.frontier = first  # prefetch from here
        self.first_seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._note_listing()

    # -- vault side ----------------------------------------------------------

    def _note_listing(self) -> None:
        now = time.time()
        for name in self.available:
            self.first_seen.setdefault(name, now)

    def refresh(self) -> None:
        self.listing = self.store.listing()
        self.available = self.listing.available()
        self.listed_at = time.monotonic()
        self._note_listing()

    def _has(self, name: str) -> bool:
        if SEGMENT.fullmatch(name):
            return name in self.listing.segments or self.listing.partial_end(name) > 0
        if HISTORY.fullmatch(name):
            return name in self.listing.histories
        return name in self.listing.others

    def _fetch(self, name: str) -> None:
        if SEGMENT.fullmatch(name):
            data = self.store.segment(name, self.listing, self.seg_size)
        else:
            data = self.store.get(name)
        # No fsync: the inbox is a hand-off, and recovery syncs what it keeps.
        tmp = self.inbox / f".tmp-{name}"
        write_new(tmp, data, self.os_user)
        os.replace(tmp, self.ready / name)
        with self._lock:
            self.served += 1
            self.bytes += len(data)

    def _submit(self, name: str, again: bool = False) -> None:
        """Fetch into the inbox; a prefetch never repeats, a request may."""
        if name in self.inflight or (self.ready / name).exists():
            return
        if name in self.fetched and not again:
            return
        self.fetched.add(name)
        self.inflight[name] = self.pool.submit(self._fetch, name)

    def _reap(self) -> None:
        for name, fut in list(self.inflight.items()):
            if fut.done():
                del self.inflight[name]
                exc = fut.exception()
                if exc is not None and self.follow and name in self.waiting:
                    # A standby asks again a second later: answer "not now".
                    print(f"reprieve: warning: fetching {name} failed: {exc}", file=sys.stderr)
                    self.waiting.discard(name)
                    self.fetched.discard(name)
                    (self.requests / f"{name}.want").unlink(missing_ok=True)
                    continue
                if exc is not None:
                    self.error = exc
                    continue
                if name in self.waiting:  # the answer is in place: release walfetch.sh
                    self.waiting.discard(name)
                    (self.requests / f"{name}.want").unlink(missing_ok=True)

    # -- prefetch ------------------------------------------------------------

    def _following(self) -> list[str]:
        """Segments from the frontier on, on its timeline (names sort by timeline, then
        position, so this is one slice of the sorted list)."""
        if self.frontier is None:
            return []
        tli = self.frontier[:8]
        out = []
        for name in self.available[bisect.bisect_left(self.available, self.frontier) :]:
            if name[:8] != tli:
                break
            out.append(name)
        return out

    def _ahead(self) -> list[str]:
        """Segments on the frontier's timeline after it, up to ``window`` past the asked."""
        if self.frontier is None:
            return []
        newest = self.newest_asked or self.frontier
        limit = segment_number(newest, self.seg_size)[1] + self.window
        out = []
        for name in self._following():
            if segment_number(name, self.seg_size)[1] > limit:
                break
            out.append(name)
        return out

    def prefetch(self, count: int) -> None:
        """Fetch the first ``count`` segments from the frontier now, in parallel, and wait."""
        for name in self._following()[:count]:
            self._submit(name)
        for fut in list(self.inflight.values()):
            fut.result()
        self._reap()

    # -- requests ------------------------------------------------------------

    def _progress(self, name: str) -> None:
        if not SEGMENT.fullmatch(name):
            return
        self.asked.append(name)
        if self.newest_asked is None or name > self.newest_asked:
            self.newest_asked = name
            self.frontier = name
            self._drop_before(name)

    def _got(self, name: str) -> None:
        """walfetch.sh copied ``name``: it and what came before are done with."""
        with contextlib.suppress(FileNotFoundError):
            (self.requests / f"{name}.got").unlink()
        self._progress(name)
        if SEGMENT.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                (self.ready / name).unlink()  # moved already, unless delivered by a copy

    def _answer(self, name: str) -> None:
        """A request: answered by removing NAME.want once the file or NAME.none is there."""
        want = self.requests / f"{name}.want"
        with contextlib.suppress(FileNotFoundError):
            (self.inbox / f"{name}.none").unlink()  # an answer to an earlier request
        self._progress(name)
        if name in self.inflight:
            self.waiting.add(name)
            return
        growing = SEGMENT.fullmatch(name) and name not in self.listing.segments
        if (self.ready / name).exists() and not growing:
            want.unlink(missing_ok=True)
            return
        if not self._has(name) or growing:
            self.refresh()  # it may have arrived since the last listing
        if self._has(name):
            # A streamed segment still growing is fetched afresh on each request.
            with contextlib.suppress(FileNotFoundError):
                (self.ready / name).unlink()
            self._submit(name, again=True)
            self.waiting.add(name)
            return
        if SEGMENT.fullmatch(name):
            self.missing.append(name)
        (self.inbox / f"{name}.none").touch(0o644)
        want.unlink(missing_ok=True)

    def _drop_before(self, name: str) -> None:
        """Recovery reads forward: segments before the one asked for are done with."""
        for entry in os.scandir(self.ready):
            if SEGMENT.fullmatch(entry.name) and entry.name[8:] < name[8:]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def _beat(self) -> None:
        """feeder.alive, on a thread of its own: a slow vault listing must not look
        like a dead feeder to walfetch.sh."""
        alive = self.inbox / walhelper.ALIVE
        while not self.stop.is_set():
            alive.touch(0o644)
            self.stop.wait(ALIVE_EVERY_S)

    def step(self) -> None:
        now = time.monotonic()
        if self.follow and now - self.listed_at >= 1.0:
            self.refresh()
        for entry in sorted(os.scandir(self.requests), key=lambda e: e.name):
            if entry.name.endswith(".got"):
                self._got(entry.name[: -len(".got")])
            elif entry.name.endswith(".want") and entry.name[:-5] not in self.waiting:
                self._answer(entry.name[: -len(".want")])
        self._reap()
        for name in self._ahead():
            if name not in self.listing.segments and self.follow:
                continue  # a growing segment is served only when asked for
            self._submit(name)

    def beat(self) -> threading.Thread:
        beating = threading.Thread(target=self._beat, name="wal-feeder-alive", daemon=True)
        beating.start()
        return beating

    def run(self) -> None:
        beating = self.beat()
        try:
            while not self.stop.is_set():
                self.step()
                self.stop.wait(POLL_S)
        except BaseException as exc:  # reported by the owner, which stops the cluster
            self.error = exc
        finally:
            self.stop.set()
            beating.join()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="wal-feeder", daemon=True)
        thread.start()
        return thread

    def gaps(self) -> list[str]:
        """Segments asked for and lacking although the vault holds later ones."""
        newest = self.available[-1] if self.available else None
        return [m for m in self.missing if newest is not None and m < newest]

    def lag_s(self) -> float:
        """Age of the oldest WAL the vault holds that the cluster has not asked for."""
        if self.newest_asked is None:
            pending = self.available
        else:
            pending = [n for n in self.available if n > self.newest_asked]
        if not pending:
            return 0.0
        return max(0.0, time.time() - min(self.first_seen.get(n, time.time()) for n in pending))


def missing_between(listing: LogListing, first: str, last: str, seg_size: int) -> list[str]:
    """Segments of ``first``'s timeline from ``first`` to ``last`` the vault lacks."""
    tli, start = segment_number(first, seg_size)
    end = segment_number(last, seg_size)[1]
    have = {
        segment_number(n, seg_size)[1]
        for n in listing.available()
        if segment_number(n, seg_size)[0] == tli
    }
    per_id = 0x100000000 // seg_size
    return [
        f"{tli:08X}{n // per_id:08X}{n % per_id:08X}"
        for n in range(start, end + 1)
        if n not in have
    ]
