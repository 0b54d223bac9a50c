"""archive_command across the OS-user line, in the standard library alone.

``archive_command`` runs as the database's OS user, which usually cannot
run reprieve's interpreter, read its password, or write its vault. ``wal
setup`` copies this file, as it is, into a spool folder that user owns; the
system's ``python3`` runs it:

``walhelper.py push PATH SPOOL MAX_BYTES``
    put the file into the spool (temporary name, fsync, rename), for
    ``reprieve wal ship`` to send. Past MAX_BYTES of spooled files the file
    is dropped and the drop recorded, so an unreachable vault never fills
    the database's disk.

(The restore side, walfetch.sh, is POSIX sh: it runs once per WAL file.)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime, timezone

ALIVE = "feeder.alive"  # touched by the feeder; read by walfetch.sh


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def push(path: str, spool: str, limit: int) -> int:
    name = os.path.basename(path)
    os.makedirs(spool, mode=0o750, exist_ok=True)
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
    os.chmod(tmp, 0o640)  # WAL is the database's data: not for every user
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(spool, name))
    _fsync_dir(spool)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "push":
        return push(argv[1], argv[2], int(argv[3]))
    print("usage: walhelper.py push PATH SPOOL MAX_BYTES", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
