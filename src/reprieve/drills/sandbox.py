"""The sandbox a drill restores into, torn down on every path, even ``kill -9``.

A sandbox is a fresh folder (``reprieve-drill-<id>`` in the system's
temporary folder, or under ``REPRIEVE_DRILL_DIR``) holding one subfolder
per restored resource; restored PostgreSQL clusters run from there on free
ports of their own, listening on 127.0.0.1 only. Nothing in it is
production's: no path, no port, no vault is written.

Teardown stops every cluster in the folder (``pg_ctl stop -m immediate``)
and removes it. Three things run it:

* the drill itself, leaving its ``with`` block (including Ctrl-C and
  SIGTERM, which the CLI turns into an exception);
* a watchdog process started with the sandbox, which waits on a pipe from
  the drill: when the drill dies without tearing down (SIGKILL, OOM), the
  pipe closes and the watchdog tears down;
* :func:`reap`, run before every drill, for sandboxes whose drill and
  watchdog are both gone (a host reboot): each sandbox is registered in
  ``REPRIEVE_HOME/drills/active/`` with its owner's pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from reprieve.home import home
from reprieve.sources.pg_standby import process_alive
from reprieve.sources.postgres import default_os_user, pg_tool, run_as


def _registry() -> Path:
    return home() / "drills" / "active"


def teardown(folder: Path) -> str:
    """Stop every cluster under ``folder`` and remove it; what was done, in words."""
    stopped = 0
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if (child / "postmaster.pid").exists():
                subprocess.run(
                    [pg_tool("pg_ctl"), "-D", str(child), "-m", "immediate", "-w", "stop"],
                    capture_output=True,
                    timeout=120,
                    **run_as(default_os_user()),
                )
                stopped += 1
        shutil.rmtree(folder, ignore_errors=True)
    gone = not folder.exists()
    servers = f"stopped {stopped} server{'s' * (stopped != 1)}, " if stopped else ""
    return f"{servers}removed {folder}" if gone else f"{servers}could not remove {folder}"


class Sandbox:
    """``with Sandbox(drill_id) as box:`` a folder (``box.path``) gone afterwards."""

    def __init__(self, drill_id: str, parent: Path | None = None) -> None:
        self.drill_id = drill_id
        given = parent or os.environ.get("REPRIEVE_DRILL_DIR")
        self.parent = Path(given) if given else Path(tempfile.gettempdir())
        self.path = self.parent / f"reprieve-drill-{drill_id}"
        self.record = _registry() / f"{drill_id}.json"
        self.outcome = ""
        self._watchdog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sandbox:
        self.parent.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(mode=0o700)
        # The database's OS user must reach its cluster's folder inside.
        self.path.chmod(0o711)
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps({"path": str(self.path), "pid": os.getpid()}))
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "reprieve.drills.sandbox", str(self.path), str(self.record)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or a killed process group spares it
        )
        return self

    def folder(self, resource: str) -> Path:
        return self.path / resource

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.outcome = teardown(self.path)
        except (OSError, subprocess.SubprocessError) as error:  # the watchdog tries again
            self.outcome = f"teardown of {self.path} failed: {error}"
        finally:
            self._release()

    def _release(self) -> None:
        if not self.path.exists():
            with contextlib.suppress(OSError):
                self.record.unlink()
        if self._watchdog is not None:
            with contextlib.suppress(OSError):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()  # nothing left: it exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(10)


def reap() -> list[str]:
    """Tear down sandboxes whose drill is gone; what was removed."""
    removed: list[str] = []
    folder = _registry()
    if not folder.is_dir():
        return removed
    for record in folder.glob("*.json"):
        try:
            info = json.loads(record.read_text())
            path, pid = Path(info["path"]), int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if process_alive(pid):
            continue
        removed.append(teardown(path))
        with contextlib.suppress(OSError):
            record.unlink()
    return removed


def _watch(path: Path, record: Path) -> None:
    """The watchdog: block until the drill's pipe closes, then clean what is left."""
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()
    if path.exists():
        teardown(path)
    with contextlib.suppress(OSError):
        record.unlink()


if __name__ == "__main__":
    _watch(Path(sys.argv[1]), Path(sys.argv[2]))
