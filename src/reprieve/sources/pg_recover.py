"""Point-in-time recovery and warm standbys from a vault.

Restore, in phases whose sum is the achieved RTO:

1. **fetch_base**: pick the newest base backup that ends before the target,
   stream its tar from the vault (blobs read in parallel, in order) out as
   the cluster's files (``pg_untar``: ``O_DIRECT``, owned by the cluster's OS
   user), and write the recovery settings: ``restore_command`` (walfetch.sh
   reading the inbox the feeder fills), the target,
   ``recovery_target_action = 'promote'``, and, so the copy can neither block
   nor pollute the original's archive, ``synchronous_standby_names = ''`` and
   ``archive_mode = off``.
2. **fetch_wal**: prefetch, in parallel, the first segments replay needs.
3. **replay**: start the server; the feeder keeps serving and prefetching;
   ends when the server logs that redo is done.
4. **promote**: ends when the server accepts connections on a new timeline.

What was recovered is read from the server's own log: the time of the last
replayed commit, and the LSN where redo ended. A recovery that stops short
(a WAL gap, a target past the end of the log) is an error, not a success.

A warm standby is the same restore without a target and with
``standby.signal``: the server keeps asking for the next segment and a
follower process keeps the inbox fed from the (DR) vault until promote.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprieve.engine.progress import Progress
from reprieve.errors import DamageError, DatabaseError, NotFoundError, UsageError
from reprieve.sources.pg_feeder import Feeder, install_fetch, missing_between
from reprieve.sources.pg_inspect import Window, restorable_window
from reprieve.sources.pg_server import (
    READY,
    ServerLog,
    free_port,
    recovery_log,
    socket_dir,
    start_server,
    stop_server,
)
from reprieve.sources.pg_untar import Untar
from reprieve.sources.postgres import (
    TAR_NAME,
    base_meta,
    base_points,
    chown_to,
    owner_ids,
    parse_lsn,
    run_as,
    segment_number,
    write_new,
)
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.logs import LogListing, LogStore, lease
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault

PREFETCH_SEGMENTS = 4
READ_AHEAD_BLOBS = 16
READERS = 4
STALL_S = 600.0
AUTO_CONF_KEYS = {
    "restore_command",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_action",
    "recovery_target_timeline",
    "recovery_target_inclusive",
    "archive_mode",
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "hot_standby",
    "wal_retrieve_retry_interval",
}


class TargetNotReached(DatabaseError):
    """Recovery ran out of WAL before the target: the target is past the window."""


@dataclass(frozen=True)
class Target:
    kind: str  # "time", "lsn", "xid" or "latest"
    value: str = ""

    @property
    def time(self) -> datetime | None:
        return parse_time(self.value) if self.kind == "time" else None

    def settings(self) -> dict[str, str]:
        if self.kind == "time":
            when = parse_time(self.value)
            return {"recovery_target_time": when.isoformat(sep=" ", timespec="microseconds")}
        if self.kind == "lsn":
            parse_lsn(self.value)
            return {"recovery_target_lsn": self.value}
        if self.kind == "xid":
            if not self.value.isdigit():
                raise UsageError(f"--to-xid needs a transaction id, not {self.value!r}")
            return {"recovery_target_xid": self.value}
        return {}


def parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not a time like '2026-11-22 11:30:00+00'") from None
    if when.tzinfo is None:
        raise UsageError(f"give the time zone of {text!r}, e.g. '{text}+00'")
    return when.astimezone(UTC)


def _stop_time(point: Point) -> datetime:
    return datetime.fromisoformat(base_meta(point)["stop_time"])


def choose_base(bases: list[Point], target: Target, window: Window) -> Point:
    if not bases:
        raise NotFoundError("no base backup of this resource in the vault")
    if target.kind == "time":
        when = target.time
        assert when is not None
        fitting = [p for p in bases if _stop_time(p) <= when]
        if not fitting or (window.latest is not None and when > window.latest):
            raise UsageError(
                f"{when.isoformat(sep=' ', timespec='seconds')} is outside the restorable "
                f"window ({window.describe()})"
            )
        return fitting[-1]
    if target.kind == "lsn":
        lsn = parse_lsn(target.value)
        fitting = [p for p in bases if parse_lsn(base_meta(p)["stop_lsn"]) <= lsn]
        if not fitting:
            raise UsageError(f"LSN {target.value} is before the oldest base backup's end")
        return fitting[-1]
    return bases[-1]


# -- reading the base backup ---------------------------------------------------


def _blobs(vault: Vault, ids: list[bytes]) -> Iterator[bytes]:
    """The blobs in order, read ``READERS`` at a time ahead of the consumer."""
    with ThreadPoolExecutor(READERS, thread_name_prefix="base-read") as pool:
        queue: deque[Future[bytes]] = deque()
        it = iter(ids)
        for blob_id in it:
            queue.append(pool.submit(vault.read_blob, blob_id))
            if len(queue) >= READ_AHEAD_BLOBS:
                break
        while queue:
            data = queue.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(vault.read_blob, nxt))
            yield data


def extract_base(
    vault: Vault,
    point: Point,
    target: Path,
    os_user: str | None,
    progress: Progress | None = None,
) -> int:
    nodes = vault.read_tree(point.tree)
    tar = next((n for n in nodes if n.name == TAR_NAME), None)
    if tar is None:
        raise DamageError(f"point {point.short_id} has no {TAR_NAME.decode()}")
    untar = Untar(target, owner_ids(os_user))
    written = 0
    try:
        if progress is not None:
            progress.start("restore base backup", tar.size)
        for data in _blobs(vault, tar.content):
            untar.feed(data)
            written += len(data)
            if progress is not None:
                progress.advance(len(data))
    except OSError as exc:  # the target's disk, not the vault: full, read-only, refused
        raise DatabaseError(
            f"writing the base backup into {target} failed at {untar.member}: {exc.strerror}"
        ) from exc
    finally:
        if progress is not None:
            progress.finish()
        untar.close()
    if written != tar.size or not untar.whole:
        raise DamageError(f"the base backup of point {point.short_id} ends early")
    return written


def prepare_target(target: Path, os_user: str | None) -> None:
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty; restore into a new or empty folder")
    target.mkdir(parents=True, exist_ok=True)
    chown_to(target, os_user)
    target.chmod(0o700)
    # The cluster and its restore_command run as os_user: every parent must let it in.
    if (
        run_as(os_user)
        and subprocess.run(["test", "-w", str(target)], **run_as(os_user)).returncode
    ):
        target.rmdir()
        raise UsageError(
            f"OS user {os_user} cannot reach {target}: choose a folder whose parents it "
            "may enter (mode o+x), e.g. under its home"
        )


def write_settings(target: Path, settings: dict[str, str], os_user: str | None) -> None:
    """Set keys in postgresql.auto.conf (read last, so they win), dropping old values."""
    auto = target / "postgresql.auto.conf"
    lines = []
    if auto.is_file() and not auto.is_symlink():
        lines = auto.read_text().splitlines()
    keep = [ln for ln in lines if ln.split("=", 1)[0].strip() not in AUTO_CONF_KEYS]
    for key, value in settings.items():
        keep.append(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'")
    # The folder is the database user's: files are made afresh, never written through.
    write_new(auto, ("\n".join(keep) + "\n").encode(), os_user)
    # Debian keeps postgresql.conf and pg_hba.conf outside the data folder.
    conf = target / "postgresql.conf"
    if not conf.exists():
        write_new(conf, b"# written by reprieve restore; the original lived elsewhere\n", os_user)
    hba = target / "pg_hba.conf"
    if not hba.exists():
        write_new(hba, b"local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n", os_user)


@dataclass
class Recovery:
    resource: str
    base: str
    requested: str
    recovered_to: datetime | None = None
    recovered_lsn: str | None = None
    rpo_gap_s: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    wal_files: int = 0
    wal_bytes: int = 0
    base_bytes: int = 0
    port: int = 0
    target: str = ""
    running: bool = False

    @property
    def duration_s(self) -> float:
        return round(sum(self.phases.values()), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "base": self.base,
            "requested": self.requested,
            "recovered_to": self.recovered_to.isoformat() if self.recovered_to else None,
            "recovered_lsn": self.recovered_lsn,
            "rpo_gap_s": None if self.rpo_gap_s is None else round(self.rpo_gap_s, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "duration_s": self.duration_s,
            "wal_files": self.wal_files,
            "wal_bytes": self.wal_bytes,
            "base_bytes": self.base_bytes,
            "target": self.target,
            "port": self.port,
            "running": self.running,
        }


def inbox_for(target: Path) -> Path:
    return target.parent / f".{target.name}.reprieve-wal"


def _check_chain(listing: LogListing, base: Point, latest: bool) -> None:
    meta = base_meta(base)
    seg = int(meta["segment_size"])
    tli = segment_number(meta["start_wal"], seg)[0]
    last = meta["stop_wal"]
    if latest:
        same = [n for n in listing.available() if segment_number(n, seg)[0] == tli]
        last = max([last, *same])
    missing = missing_between(listing, meta["start_wal"], last, seg)
    if missing:
        raise DamageError(
            f"WAL segment {missing[0]} is missing from the vault ({len(missing)} missing "
            f"after base backup {base.short_id}); run `reprieve check`"
        )


def restore_postgres(
    vault: Vault,
    resource: str,
    target: Path,
    to: Target,
    port: int | None = None,
    start: bool = False,
    os_user: str | None = None,
    listen: str = "127.0.0.1",
    progress: Progress | None = None,
    settings: dict[str, str] | None = None,
) -> Recovery:
    """Recover ``resource`` into ``target``; ``settings`` are extra server settings
    (a drill's sandbox gives the cluster an ``hba_file`` of its own)."""
    began = time.monotonic()
    target = target.absolute()
    store = LogStore(vault, resource)
    # Shared lock: no prune may remove the base's packs while they are read.
    with VaultLock(vault.backend, LockKind.SHARED, "restore"):
        bases = base_points(vault, resource)
        if not bases:
            raise NotFoundError(f"no base backup of {resource!r} in this vault")
        # The lease goes up before WAL is listed, from the oldest base's start, and
        # moves forward once the base is chosen: expiry never races the choice.
        with lease(vault, resource, min(base_meta(p)["start_wal"] for p in bases)) as held:
            listing = store.listing()
            # The window's end (a pg_waldump of the newest WAL) is only worked out
            # when recovery says it did not reach the target: the usual case does not pay.
            window = restorable_window(store, bases, listing, with_latest=False)
            base = choose_base(bases, to, window)
            _check_chain(listing, base, latest=to.kind == "latest")
            held.move(base_meta(base)["start_wal"])
            # Checked before anything is written: from here on the folder is ours.
            prepare_target(target, os_user)
            try:
                return _recover(
                    vault,
                    store,
                    base,
                    target,
                    to,
                    port,
                    start,
                    os_user,
                    listen,
                    began,
                    progress,
                    settings or {},
                )
            except TargetNotReached:
                discard(target)
                window = restorable_window(store, bases, store.listing(), with_latest=True)
                raise UsageError(
                    f"{to.value} is outside the restorable window ({window.describe()})"
                ) from None
            except BaseException:
                # A half-recovered folder is of no use and would block a rerun; the
                # server's log stays beside it (recovery_log).
                discard(target)
                raise


def discard(target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(inbox_for(target), ignore_errors=True)


def _recover(
    vault: Vault,
    store: LogStore,
    base: Point,
    target: Path,
    to: Target,
    port: int | None,
    start: bool,
    os_user: str | None,
    listen: str,
    began: float,
    progress: Progress | None,
    extra: dict[str, str],
) -> Recovery:
    asked_at = datetime.now(UTC)
    resource = store.resource
    meta = base_meta(base)
    report = Recovery(
        resource,
        base.id,
        to.value if to.kind != "latest" else asked_at.isoformat(),
        target=str(target),
    )
    report.base_bytes = extract_base(vault, base, target, os_user, progress)
    inbox = inbox_for(target)
    shutil.rmtree(inbox, ignore_errors=True)
    fetch_command = install_fetch(inbox, os_user)
    report.port = port or free_port()
    settings = {
        "restore_command": fetch_command,
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "archive_mode": "off",
        "synchronous_standby_names": "",
        "port": str(report.port),
        "listen_addresses": listen if start else "",
        "unix_socket_directories": str(socket_dir(target)),
        **to.settings(),
        **extra,
    }
    write_settings(target, settings, os_user)
    write_new(target / "recovery.signal", b"", os_user)
    report.phases["fetch_base"] = time.monotonic() - began

    mark = time.monotonic()
    seg = int(meta["segment_size"])
    feeder = Feeder(store, inbox, seg, meta["start_wal"], os_user=os_user)
    feeder.prefetch(PREFETCH_SEGMENTS)
    report.phases["fetch_wal"] = time.monotonic() - mark

    mark = time.monotonic()
    log = ServerLog(recovery_log(target))
    feeding = feeder.start()
    server = start_server(target, report.port, os_user, log.path)
    try:
        _wait_for(log, server, feeder, "redo done at|recovery stopping", to)
        report.phases["replay"] = time.monotonic() - mark
        mark = time.monotonic()
        _wait_for(log, server, feeder, READY, to)
        report.phases["promote"] = time.monotonic() - mark
        if to.kind == "latest" and feeder.gaps():  # asked for just before redo ended
            raise DamageError(f"WAL segment {feeder.gaps()[0]} is missing from the vault")
    except BaseException:
        stop_server(target, os_user)
        if server.poll() is None:
            server.kill()
        raise
    finally:
        feeder.stop.set()
        feeding.join()
    report.wal_files, report.wal_bytes = feeder.served, feeder.bytes
    report.recovered_to = log.last_commit()
    report.recovered_lsn = log.redo_end()
    if to.kind in ("time", "latest") and report.recovered_to is not None:
        asked = to.time if to.kind == "time" else asked_at
        assert asked is not None
        report.rpo_gap_s = max(0.0, (asked - report.recovered_to).total_seconds())
    if start:
        report.running = True
    else:
        stop_server(target, os_user)
        server.wait(60)
    shutil.rmtree(inbox, ignore_errors=True)
    return report


def _wait_for(
    log: ServerLog, server: subprocess.Popen[bytes], feeder: Feeder, pattern: str, to: Target
) -> None:
    """Until the log shows ``pattern``; a gap or a stalled recovery is an error.

    There is no limit on a recovery that moves: only ``STALL_S`` without a new
    log line or a WAL file served stops it.
    """
    moved = time.monotonic()
    seen = (0, 0)
    while True:
        text = log.read()
        if feeder.error is not None:
            raise DatabaseError(f"serving WAL failed: {feeder.error}")
        gaps = feeder.gaps()
        if gaps and to.kind == "latest":
            raise DamageError(f"WAL segment {gaps[0]} is missing from the vault")
        if re.search(pattern, text):
            return
        if server.poll() is not None:
            if gaps:
                raise DamageError(f"WAL segment {gaps[0]} is missing from the vault")
            fatal = log.fatal() or f"exit code {server.returncode}"
            if "before configured recovery target was reached" in fatal:
                raise TargetNotReached(fatal)
            raise DatabaseError(f"recovery failed: {fatal} (log: {log.path})")
        now = time.monotonic()
        if (len(text), feeder.served) != seen:
            seen, moved = (len(text), feeder.served), now
        elif now - moved > STALL_S:
            raise DatabaseError(f"recovery made no progress for {STALL_S:.0f} s (log: {log.path})")
        time.sleep(0.01)
