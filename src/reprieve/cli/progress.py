"""A rich progress bar on stderr, for terminals only."""

from __future__ import annotations

import atexit
import threading

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)


class RichProgress:
    def __init__(self, label: str) -> None:
        self._label = label
        self._lock = threading.Lock()
        self._files = 0
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task(label, total=None, files=0)

    def start(self, label: str, total_bytes: int | None = None) -> None:
        self._bar.update(self._task, description=label, total=total_bytes)
        self._bar.start()
        # Stopped even when the command fails, before its error line.
        atexit.register(self.finish)

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self._files += files
            self._bar.update(self._task, advance=nbytes, files=self._files)

    def finish(self) -> None:
        self._bar.stop()
