"""Running a restored cluster's server: start, stop, and the log it reports in."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from reprieve.sources.postgres import pg_tool, run_as, write_new

READY = "database system is ready to accept connections"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def socket_dir(target: Path) -> Path:
    # A unix socket path must fit in 107 bytes.
    if len(str(target)) + len("/.s.PGSQL.65535") < 100:
        return target
    return Path(tempfile.gettempdir())


class ServerLog:
    """Follows the server's log file for the lines recovery reports with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = ""
        self._pos = 0

    def read(self) -> str:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self._pos)
            chunk = f.read()
            self._pos += len(chunk)
            self.text += chunk.decode("utf-8", "replace")
        return self.text

    def last_commit(self) -> datetime | None:
        found = re.findall(r"last completed transaction was at log time ([0-9:\-. +]+)", self.text)
        if not found:
            return None
        return datetime.fromisoformat(found[-1].strip()).astimezone(UTC)

    def redo_end(self) -> str | None:
        found = re.findall(r"redo done at ([0-9A-F]+/[0-9A-F]+)", self.text)
        return found[-1] if found else None

    def fatal(self) -> str | None:
        found = re.findall(r"(?:FATAL|PANIC):\s+(.*)", self.text)
        return found[-1].strip() if found else None


def start_server(
    target: Path, port: int, os_user: str | None, log: Path
) -> subprocess.Popen[bytes]:
    # A fresh log: the recovery is read from it, and an old one would answer early.
    write_new(log, b"", os_user, 0o640)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                pg_tool("postgres"),
                "-D",
                str(target),
                "-p",
                str(port),
                "-c",
                "logging_collector=off",
                "-c",
                "log_timezone=UTC",
                "-c",
                "timezone=UTC",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(target),
            start_new_session=True,
            **run_as(os_user),
        )


def stop_server(target: Path, os_user: str | None) -> None:
    subprocess.run(
        [pg_tool("pg_ctl"), "-D", str(target), "-m", "fast", "-w", "stop"],
        capture_output=True,
        **run_as(os_user),
    )


def recovery_log(target: Path) -> Path:
    """The log of a restored cluster's server, beside its folder so it outlives a failure."""
    return target.parent / f"{target.name}.recovery.log"
