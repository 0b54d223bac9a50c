"""A vault in a local folder.

Objects are files under the vault folder. ``put`` writes to a hidden
temporary name in the target folder, fsyncs it, renames it over the final
name, and fsyncs the folder, so a crash leaves either the whole object or a
``.tmp-*`` leftover that ``list`` ignores and prune removes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from reprieve.errors import DiskFullError, NotFoundError, StorageError

TMP_PREFIX = ".tmp-"


def _translate(exc: OSError, what: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(what)
    return StorageError(f"{what}: {exc.strerror or exc}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self.region = ""
        # A folder cannot lock its files: on a locked vault, reprieve itself
        # enforces retention and holds (see vault/immutability.py).
        self.lock_mode: str | None = None
        self.can_lock = False
        self.storage_class = ""
        self.bypass_governance = False
        self._made: set[Path] = set()

    def _path(self, name: str) -> Path:
        return self.root / name

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{name} is missing from the vault at {self.root}") from exc
        except OSError as exc:
            raise _translate(exc, f"reading {name}") from exc

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{name} is missing from the vault at {self.root}") from exc
        except OSError as exc:
            raise _translate(exc, f"reading {name}") from exc
        try:
            if offset < 0:
                offset = max(0, os.fstat(fd).st_size + offset)
            return os.pread(fd, length, offset)
        except OSError as exc:
            raise _translate(exc, f"reading {name}") from exc
        finally:
            os.close(fd)

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._made:
            return
        missing = []
        parent = folder
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        folder.mkdir(parents=True, exist_ok=True)
        # A new folder's entry must be durable before objects inside it count.
        for made in reversed(missing):
            _fsync_dir(made.parent)
        self._made.add(folder)

    def put(
        self, name: str, data: bytes | bytearray | memoryview, retain_until: datetime | None = None
    ) -> None:
        final = self._path(name)
        tmp = final.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            self._ensure_dir(final.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _translate(exc, f"writing {name} to {self.root}") from exc

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _translate(exc, f"deleting {name}") from exc

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"{name} is missing from the vault at {self.root}") from exc

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for fname in sorted(filenames):
                if fname.startswith(TMP_PREFIX):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, fname)).st_size
                except FileNotFoundError:
                    continue
                yield (f"{rel}/{fname}" if rel != "." else fname), size

    def remove_leftovers(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for dirpath, _dirs, filenames in os.walk(self.root):
            for fname in filenames:
                path = os.path.join(dirpath, fname)
                with contextlib.suppress(FileNotFoundError):
                    if fname.startswith(TMP_PREFIX) and os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
        return removed

    def retain(self, name: str, until: datetime) -> None:
        return None

    def locked_until(self, name: str) -> datetime | None:
        return None

    def hold(self, name: str, on: bool) -> None:
        return None

    def usage(self) -> dict[str, int]:
        return {"LOCAL": sum(size for _, size in self.list(""))}

    def object_lock(self) -> dict[str, Any] | None:
        return None

    def first_version(self, name: str) -> bytes | None:
        return None  # a folder keeps no versions
