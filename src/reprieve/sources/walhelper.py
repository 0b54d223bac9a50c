"""The hand-off between PostgreSQL's OS user and reprieve, in the standard library alone.

``archive_command`` and ``restore_command`` run as the database's OS user,
which usually cannot run reprieve's interpreter, read its password, or
write its vault. This file is copied, as it is, next to a folder both users
share, and run by the system's ``python3``:

``walhelper.py push PATH SPOOL MAX_BYTES``
    archive_command: put the file into the spool (temporary name, fsync,
    rename), for ``reprieve wal ship`` or the server to send. Past
    MAX_BYTES of spooled files the file is dropped and the drop recorded,
    so an unreachable vault never fills the database's disk.

``walhelper.py fetch NAME PATH INBOX``
    restore_command: a reprieve process (restore or standby) feeds INBOX.
    If INBOX/NAME is there, copy it to PATH; otherwise ask for it with
    INBOX/NAME.want and wait until the feeder answers with the file or with
    INBOX/NAME.none (the vault has no such file: exit 1). A feeder that
    stopped touching INBOX/feeder.alive also means exit 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone

ALIVE = "feeder.alive"
ALIVE_WITHIN_S = 15.0
WAIT_S = 600.0


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def push(path: str, spool: str, limit: int) -> int:
    name = os.path.basename(path)
    os.makedirs(spool, exist_ok=True)
    if os.path.exists(os.path.join(spool, name)):
        return 0
    size = os.path.getsize(path)
    used = sum(
        os.path.getsize(os.path.join(spool, n))
        for n in os.listdir(spool)
        if not n.startswith(".") and n != "dropped.jsonl"
    )
    if used + size > limit:
        with open(os.path.join(spool, "dropped.jsonl"), "a") as log:
            when = datetime.now(timezone.utc).isoformat(timespec="seconds")  # noqa: UP017
            reason = f"spool full ({used} of {limit} bytes)"
            log.write(json.dumps({"time": when, "file": name, "reason": reason}) + "\n")
        print(
            f"reprieve: warning: WAL spool {spool} is full: {name} DROPPED; "
            "point-in-time recovery has a gap until the next base backup",
            file=sys.stderr,
        )
        return 0
    tmp = os.path.join(spool, f".tmp-{name}")
    shutil.copyfile(path, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(spool, name))
    _fsync_dir(spool)
    return 0


def _feeder_alive(inbox: str) -> bool:
    try:
        return time.time() - os.stat(os.path.join(inbox, ALIVE)).st_mtime < ALIVE_WITHIN_S
    except FileNotFoundError:
        return False


def fetch(name: str, dest: str, inbox: str) -> int:
    source = os.path.join(inbox, name)
    none = source + ".none"
    asked = False
    deadline = time.monotonic() + WAIT_S
    pause = 0.002
    while time.monotonic() < deadline:
        if os.path.exists(source):
            tmp = dest + ".reprieve-tmp"
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
            if not name.endswith(".history"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(source)
            return 0
        if os.path.exists(none):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(none)
            return 1
        if not asked:
            with open(source + ".want", "w"):
                pass
            asked = True
        elif not _feeder_alive(inbox):
            return 1
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "push":
        return push(argv[1], argv[2], int(argv[3]))
    if len(argv) == 4 and argv[0] == "fetch":
        return fetch(argv[1], argv[2], argv[3])
    print("usage: walhelper.py push PATH SPOOL MAX | fetch NAME PATH INBOX", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
