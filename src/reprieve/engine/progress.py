"""Progress reporting: the engine counts, the caller decides how to show it."""

from __future__ import annotations

import threading
from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total_bytes: int | None = None) -> None: ...

    def advance(self, nbytes: int = 0, files: int = 0) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Counts without showing anything (used with --json and off a terminal)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = 0
        self.files = 0

    def start(self, label: str, total_bytes: int | None = None) -> None:
        return None

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.files += files

    def finish(self) -> None:
        return None
