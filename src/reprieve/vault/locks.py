"""Vault locks: shared for backup and copy, exclusive for prune and forget.

A lock is a small plaintext JSON object at ``locks/<random>``::

    {"kind": "shared" | "exclusive", "operation": "backup", "host": "...",
     "pid": 1234, "time": ISO-8601 UTC (refreshed every 5 minutes)}

Taking a lock writes the lock object first and then lists the others; on a
conflict the new lock is removed again and :class:`LockedError` is raised,
so two racing writers both back off rather than both proceed. A lock is
stale when its process is gone (same host, no such pid) or when it has not
been refreshed for 30 minutes; stale locks are removed on the way in.
``force`` removes every lock: the operator's `--force-unlock`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import TracebackType

from reprieve.errors import LockedError, NotFoundError, ReprieveError
from reprieve.vault.backends.base import Backend

STALE_AFTER = timedelta(minutes=30)
REFRESH_EVERY = timedelta(minutes=5)
RETRY_EVERY = timedelta(seconds=20)


class LockKind(StrEnum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@dataclass(frozen=True)
class LockInfo:
    name: str
    kind: LockKind
    operation: str
    host: str
    pid: int
    time: datetime

    def is_stale(self, now: datetime) -> bool:
        if now - self.time > STALE_AFTER:
            return True
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def describe(self) -> str:
        when = self.time.isoformat(timespec="seconds")
        return f"{self.operation} (pid {self.pid} on {self.host}, since {when})"


def read_locks(backend: Backend) -> list[LockInfo]:
    found = []
    for name, _size in backend.list("locks"):
        try:
            body = json.loads(backend.get(name))
            found.append(
                LockInfo(
                    name=name,
                    kind=LockKind(body["kind"]),
                    operation=str(body["operation"]),
                    host=str(body["host"]),
                    pid=int(body["pid"]),
                    time=datetime.fromisoformat(body["time"]),
                )
            )
        except NotFoundError:
            continue
        except (ValueError, KeyError, TypeError):
            # A torn or foreign lock file blocks nothing; remove it as stale.
            backend.delete(name)
    return found


class VaultLock:
    def __init__(
        self, backend: Backend, kind: LockKind, operation: str, force: bool = False
    ) -> None:
        self.backend = backend
        self.kind = kind
        self.operation = operation
        self.force = force
        self.name = ""
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def _write(self) -> str:
        name = f"locks/{secrets.token_hex(16)}"
        body = {
            "kind": str(self.kind),
            "operation": self.operation,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": datetime.now(UTC).isoformat(),
        }
        self.backend.put(name, json.dumps(body).encode())
        return name

    def __enter__(self) -> VaultLock:
        now = datetime.now(UTC)
        for lock in read_locks(self.backend):
            if self.force or lock.is_stale(now):
                self.backend.delete(lock.name)
        self.name = self._write()
        for lock in read_locks(self.backend):
            if lock.name == self.name:
                continue
            if self.kind is LockKind.EXCLUSIVE or lock.kind is LockKind.EXCLUSIVE:
                self.backend.delete(self.name)
                raise LockedError(
                    f"the vault at {self.backend.location} is locked by {lock.describe()}; "
                    "wait for it, or pass --force-unlock if that process is gone"
                )
        self._refresher = threading.Thread(target=self._refresh, daemon=True)
        self._refresher.start()
        return self

    def _refresh(self) -> None:
        # A failed refresh is retried soon rather than ending the thread: a
        # lock that stops being refreshed looks stale after 30 minutes, and
        # another host's prune would then remove data this operation writes.
        wait = REFRESH_EVERY.total_seconds()
        while not self._stop.wait(wait):
            try:
                new = self._write()
            except ReprieveError:
                wait = RETRY_EVERY.total_seconds()
                continue
            old, self.name = self.name, new
            with contextlib.suppress(ReprieveError):
                self.backend.delete(old)
            wait = REFRESH_EVERY.total_seconds()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        # The work is done (or failed on its own): a lock that cannot be
        # removed now is found stale later and must not turn success into
        # failure.
        with contextlib.suppress(ReprieveError):
            self.backend.delete(self.name)
