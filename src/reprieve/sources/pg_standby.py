"""Warm standby: a cluster in the DR region replaying WAL from the DR vault.

``standby start`` restores the newest base backup with ``standby.signal``,
starts a follower process (``reprieve standby follow``, detached) that feeds
the cluster's inbox from the vault, then starts the cluster and waits until
it is consistent. The follower writes the standby's replay lag (the age of
the oldest WAL the vault holds that the standby has not asked for) into the
standby's state file, ``REPRIEVE_HOME/standby/<resource>.json``, which
``standby list`` and ``status`` read. ``standby promote`` asks the cluster to
promote; PostgreSQL first replays what the vault still holds (the follower
keeps serving), then opens for writes on a new timeline, and the follower
stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprieve.errors import DatabaseError, NotFoundError, ReprieveError, UsageError
from reprieve.home import home
from reprieve.sources.pg_feeder import Feeder, install_fetch
from reprieve.sources.pg_recover import extract_base, inbox_for, prepare_target, write_settings
from reprieve.sources.pg_server import (
    ServerLog,
    recovery_log,
    socket_dir,
    start_server,
    stop_server,
)
from reprieve.sources.pg_wal import write_atomic
from reprieve.sources.postgres import base_points, pg_tool, run_as, write_new
from reprieve.vault.logs import Lease, LogStore, lease
from reprieve.vault.repository import Vault

READY_TIMEOUT_S = 600.0
STATE_EVERY_S = 1.0


def state_path(resource: str) -> Path:
    return home() / "standby" / f"{resource}.json"


def _lag_path(resource: str) -> Path:
    return state_path(resource).with_suffix(".lag")


def read_state(resource: str) -> dict[str, Any]:
    path = state_path(resource)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"no standby of {resource!r} on this machine") from None
    return state


def write_state(state: dict[str, Any]) -> None:
    path = state_path(state["resource"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state, indent=2, sort_keys=True).encode())


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_standby(
    vault: Vault,
    location: str,
    password_file: Path | None,
    key_file: Path | None,
    resource: str,
    target: Path,
    port: int,
    os_user: str | None,
) -> dict[str, Any]:
    with contextlib.suppress(NotFoundError):
        old = read_state(resource)
        if old.get("state") == "following" and process_alive(old.get("follower_pid")):
            raise UsageError(f"a standby of {resource!r} already runs in {old['target']}")
    bases = base_points(vault, resource)
    if not bases:
        raise NotFoundError(f"no base backup of {resource!r} in {location}")
    base = bases[-1]
    meta = base.stats["postgres"]
    prepare_target(target, os_user)
    extract_base(vault, base, target, os_user)
    inbox = inbox_for(target)
    fetch_command = install_fetch(inbox, os_user, standby=True)
    write_settings(
        target,
        {
            "restore_command": fetch_command,
            "recovery_target_timeline": "latest",
            "archive_mode": "off",
            "synchronous_standby_names": "",
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(socket_dir(target)),
            "hot_standby": "on",
            "wal_retrieve_retry_interval": "1s",
        },
        os_user,
    )
    write_new(target / "standby.signal", b"", os_user)
    state: dict[str, Any] = {
        "resource": resource,
        "vault": location,
        "target": str(target),
        "inbox": str(inbox),
        "port": port,
        "os_user": os_user,
        "base": base.id,
        "segment_size": meta["segment_size"],
        "start_wal": meta["start_wal"],
        "state": "starting",
        "started": datetime.now(UTC).isoformat(),
    }
    write_state(state)
    command = [sys.executable, "-m", "reprieve", "standby", "follow", "--resource", resource]
    command += ["--vault", location]
    if password_file is not None:
        command += ["--password-file", str(password_file.absolute())]
    if key_file is not None:
        command += ["--key-file", str(key_file.absolute())]
    log_path = state_path(resource).with_suffix(".log")
    with open(log_path, "ab") as log:
        follower = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    state["follower_pid"] = follower.pid
    write_state(state)
    server: subprocess.Popen[bytes] | None = None
    try:
        _wait_alive(inbox, follower, log_path)
        server_log = ServerLog(recovery_log(target))
        server = start_server(target, port, os_user, server_log.path)
        _wait_consistent(server_log, server, follower)
    except BaseException:
        # Nothing half-started is left running: neither the follower nor the server.
        follower.terminate()
        if server is not None:
            stop_server(target, os_user)
        state["state"] = "failed"
        write_state(state)
        raise
    state.update(state="following", postgres_pid=server.pid)
    write_state(state)
    return state


def _wait_consistent(
    log: ServerLog, server: subprocess.Popen[bytes], follower: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if "consistent recovery state reached" in log.read():
            return
        if server.poll() is not None or follower.poll() is not None:
            raise DatabaseError(f"standby did not start: {log.fatal() or 'see ' + str(log.path)}")
        time.sleep(0.05)
    raise DatabaseError(f"standby not consistent within {READY_TIMEOUT_S:.0f} s")


def _wait_alive(inbox: Path, follower: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (inbox / "feeder.alive").exists():
            return
        if follower.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()
            raise DatabaseError(f"standby follower stopped: {tail[-1] if tail else 'no output'}")
        time.sleep(0.05)
    follower.terminate()
    raise DatabaseError("standby follower did not start within 60 s")


def follow(vault: Vault, resource: str) -> None:
    state = read_state(resource)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    feeder = Feeder(
        LogStore(vault, resource),
        Path(state["inbox"]),
        int(state["segment_size"]),
        state["start_wal"],
        follow=True,
        os_user=state.get("os_user"),
    )
    with lease(vault, resource, state["start_wal"]) as held:
        _follow(feeder, held, resource, lambda: stopping)


def _follow(feeder: Feeder, held: Lease, resource: str, stopping: Callable[[], bool]) -> None:
    noted = 0.0
    beating = feeder.beat()
    try:
        while not stopping():
            try:
                feeder.step()
            except ReprieveError as exc:
                # The vault will be back; the standby keeps what it has meanwhile.
                print(f"reprieve: warning: {exc}", file=sys.stderr, flush=True)
                time.sleep(1.0)
            if feeder.error is not None:
                raise feeder.error
            now = time.monotonic()
            if now - noted >= STATE_EVERY_S:
                noted = now
                if feeder.newest_asked is not None:
                    with contextlib.suppress(ReprieveError):
                        held.move(feeder.newest_asked)
                progress = {
                    "lag_s": round(feeder.lag_s(), 3),
                    "replayed_wal": feeder.newest_asked,
                    "updated": datetime.now(UTC).isoformat(),
                }
                # Its own file: the state file belongs to start and promote.
                write_atomic(_lag_path(resource), json.dumps(progress).encode())
            time.sleep(0.005)
    finally:
        feeder.stop.set()
        beating.join()
        feeder.pool.shutdown(wait=True, cancel_futures=True)


def promote(resource: str) -> dict[str, Any]:
    state = read_state(resource)
    if state.get("state") == "promoted":
        raise UsageError(f"the standby of {resource!r} was already promoted")
    if not process_alive(state.get("follower_pid")):
        raise DatabaseError(
            f"the standby follower of {resource!r} is not running; WAL since it stopped "
            "would not be replayed"
        )
    began = time.monotonic()
    done = subprocess.run(
        [pg_tool("pg_ctl"), "-D", state["target"], "-w", "-t", "600", "promote"],
        capture_output=True,
        text=True,
        **run_as(state.get("os_user")),
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise DatabaseError(f"promote failed: {lines[-1] if lines else done.returncode}")
    took = time.monotonic() - began
    # The follower served WAL until promotion finished; now it may go.
    pid = state.get("follower_pid")
    if isinstance(pid, int) and process_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    state.update(state="promoted", promoted=datetime.now(UTC).isoformat())
    write_state(state)
    log = ServerLog(recovery_log(Path(state["target"])))
    log.read()
    recovered = log.last_commit()
    return {
        "resource": resource,
        "target": state["target"],
        "port": state["port"],
        "promote_s": round(took, 3),
        "recovered_to": recovered.isoformat() if recovered else None,
    }


def standbys() -> list[dict[str, Any]]:
    folder = home() / "standby"
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        state = json.loads(path.read_text())
        state["lag_s"] = None
        if state.get("state") == "following":
            with contextlib.suppress(FileNotFoundError, ValueError):
                state.update(json.loads(_lag_path(state["resource"]).read_text()))
            if not process_alive(state.get("follower_pid")):
                state["state"] = "stalled"
        rows.append(state)
    return rows
