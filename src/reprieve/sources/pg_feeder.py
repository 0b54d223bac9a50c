"""Serving WAL from the vault to a recovering cluster, across the OS-user line.

The recovering cluster runs as the database's OS user; its
``restore_command`` is walfetch.sh, which only reads a shared inbox
folder. The feeder runs in the reprieve process (restore, or the standby
follower), reads the vault, and fills the inbox: ahead of replay with
``threads`` parallel fetches (prefetch), and on request (``NAME.want``),
answering ``NAME.none`` when the vault has no such file. The helper removes
each segment once copied, and the feeder keeps at most ``window`` segments
ahead of the newest one asked for, so the inbox stays small.

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

from reprieve.sources import walhelper
from reprieve.sources.postgres import chown_to, segment_number
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


def install_helper(folder: Path, os_user: str | None, name: str = "walhelper.py") -> Path:
    """Copy a helper (walhelper.py or walfetch.sh) into ``folder``, owned by ``os_user``."""
    folder.mkdir(parents=True, exist_ok=True)
    chown_to(folder, os_user)
    folder.chmod(0o700)
    source = FETCH_SCRIPT if name == FETCH_SCRIPT.name else Path(walhelper.__file__)
    target = folder / name
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


def install_fetch(inbox: Path, os_user: str | None) -> str:
    """Prepare the inbox; the restore_command that reads it."""
    script = install_helper(inbox, os_user, FETCH_SCRIPT.name)
    return f"/bin/sh {script} %f %p {inbox}"


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
        self.asked: list[str] = []
        self.missing: list[str] = []
        self.served = 0
        self.bytes = 0
        self.newest_asked: str | None = None
        self.frontier = first  # prefetch from here
        self.first_seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._alive_at = 0.0
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
            data = self.store.segment(name, self.listing)
        else:
            data = self.store.get(name)
        path = self.inbox / name
        # No fsync: the inbox is a hand-off, and recovery copies the file anyway.
        tmp = self.inbox / f".tmp-{name}"
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        chown_to(tmp, self.os_user)
        os.replace(tmp, path)
        with self._lock:
            self.served += 1
            self.bytes += len(data)

    def _submit(self, name: str, again: bool = False) -> None:
        """Fetch into the inbox; a prefetch never repeats, a request may."""
        if name in self.inflight or (self.inbox / name).exists():
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
                if exc is not None:
                    self.error = exc

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

    def _answer(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.inbox / f"{name}.want").unlink()
        if SEGMENT.fullmatch(name):
            self.asked.append(name)
            if self.newest_asked is None or name > self.newest_asked:
                self.newest_asked = name
                self.frontier = name
        if (self.inbox / name).exists() or name in self.inflight:
            return
        if not self._has(name) and (self.follow or SEGMENT.fullmatch(name)):
            self.refresh()
        # A streamed segment still growing is fetched afresh on each request.
        if self._has(name):
            self._submit(name, again=True)
            return
        if SEGMENT.fullmatch(name):
            self.missing.append(name)
        path = self.inbox / f"{name}.none"
        path.touch()
        chown_to(path, self.os_user)

    def step(self) -> None:
        now = time.monotonic()
        if now - self._alive_at >= ALIVE_EVERY_S:
            alive = self.inbox / walhelper.ALIVE
            alive.touch()
            chown_to(alive, self.os_user)
            self._alive_at = now
        if self.follow and now - self.listed_at >= 1.0:
            self.refresh()
        for entry in os.scandir(self.inbox):
            if entry.name.endswith(".want"):
                self._answer(entry.name[: -len(".want")])
        self._reap()
        for name in self._ahead():
            if name not in self.listing.segments and self.follow:
                continue  # a growing segment is served only when asked for
            self._submit(name)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
                self.stop.wait(POLL_S)
        except BaseException as exc:  # reported by the owner, which stops the cluster
            self.error = exc
        finally:
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
