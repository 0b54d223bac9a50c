"""VaultLock on a local folder: refreshing survives failed writes, stale locks go, live ones block.

The refresh intervals are shortened so that the refresher's retries happen within
a test; everything else (the lock objects, the backend, the thread) is real.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reprieve.errors import LockedError, StorageError
from reprieve.vault import locks
from reprieve.vault.backends.local import LocalBackend
from reprieve.vault.locks import LockKind, VaultLock, read_locks


class FailingLockWrites(LocalBackend):
    """A local folder whose next ``fail_next`` lock writes fail, as a flaky network would."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail_next = 0
        self.failed = 0

    def put(
        self, name: str, data: bytes | bytearray | memoryview, retain_until: datetime | None = None
    ) -> None:
        if name.startswith("locks/") and self.fail_next:
            self.fail_next -= 1
            self.failed += 1
            raise StorageError(f"writing {name}: refused by the test backend")
        super().put(name, data, retain_until)


def hold_lock(backend: LocalBackend, kind: LockKind, pid: int) -> str:
    """The lock object another process ``pid`` on this host would hold."""
    name = f"locks/{secrets.token_hex(16)}"
    body = {
        "kind": str(kind),
        "operation": "prune",
        "host": socket.gethostname(),
        "pid": pid,
        "time": datetime.now(UTC).isoformat(),
    }
    backend.put(name, json.dumps(body).encode())
    return name


def lock_names(backend: LocalBackend) -> list[str]:
    return [name for name, _ in backend.list("locks")]


def test_refresher_keeps_running_after_failed_refresh_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "REFRESH_EVERY", timedelta(milliseconds=50))
    monkeypatch.setattr(locks, "RETRY_EVERY", timedelta(milliseconds=20))
    backend = FailingLockWrites(tmp_path / "vault")

    with VaultLock(backend, LockKind.SHARED, "backup") as lock:
        backend.fail_next = 2
        (first,) = read_locks(backend)
        deadline = time.monotonic() + 2
        # Refreshed means: both failures happened, the first lock object is gone,
        # and a later one holds the lock.
        while time.monotonic() < deadline:
            held = read_locks(backend)
            if backend.failed == 2 and held and first.name not in {h.name for h in held}:
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"no refresh after the failures ({backend.failed} failed, {held})")
        assert all(h.time > first.time and h.pid == os.getpid() for h in held)
        assert lock._refresher is not None and lock._refresher.is_alive()

    assert lock_names(backend) == []


def test_lock_of_a_dead_process_is_removed_on_entry(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "vault")
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = hold_lock(backend, LockKind.EXCLUSIVE, gone.pid)

    with VaultLock(backend, LockKind.EXCLUSIVE, "prune") as lock:
        assert lock_names(backend) == [lock.name]
        assert stale != lock.name
    assert lock_names(backend) == []


def test_live_exclusive_lock_refuses_entry_with_exit_code_6(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "vault")
    held = hold_lock(backend, LockKind.EXCLUSIVE, os.getpid())

    with pytest.raises(LockedError) as refused, VaultLock(backend, LockKind.SHARED, "backup"):
        pytest.fail("entered a vault locked exclusively by a live process")

    assert refused.value.exit_code == 6
    assert f"pid {os.getpid()}" in str(refused.value)
    assert lock_names(backend) == [held], "the refused lock was left behind"
