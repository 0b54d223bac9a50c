"""One resource's part in a drill: restore it into the sandbox and check it.

Each kind of resource brings its own restore and its own checks; both
append to the drill's timeline as they go, so a failure part-way still
shows how far it got and how long each stage took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprieve.drills.model import Check, Drill, Recovered, Step
from reprieve.drills.sandbox import Sandbox
from reprieve.drills.verify import (
    Sandboxed,
    amcheck,
    content_digests,
    declared,
    server_accepts,
    sqlite_integrity,
)
from reprieve.engine.progress import Progress
from reprieve.errors import ReprieveError
from reprieve.policy.model import Verification
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault

if TYPE_CHECKING:  # imported where used: a files drill never loads the PostgreSQL code
    from reprieve.sources.pg_recover import Recovery, Target


@dataclass
class Part:
    """What the drill asks of one resource."""

    resource: str
    kind: str  # "files" or "postgres"
    vault: Vault
    checks: list[Verification]
    # The point to restore (files), or the moment to recover to (PostgreSQL:
    # None is the newest commit in the vault).
    point: Point | None = None
    recover_to: datetime | None = None
    # The newest data at the moment the disaster is declared: the primary's
    # last commit where it could be read, else the declared moment itself.
    newest_at_declaration: datetime | None = None
    # ransomware: the locked point proven unchanged (files: the one restored;
    # PostgreSQL: the base backup recovery starts from).
    locked: Point | None = None


class Clock:
    """Seconds since the drill's start, and the steps timed against it."""

    def __init__(self, drill: Drill) -> None:
        self.drill = drill
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin

    def step(self, name: str, resource: str | None, work: Callable[[], str]) -> None:
        """Time ``work`` as one step; its return is the step's detail. An error
        is recorded on the step and raised on."""
        began = self.now()
        try:
            detail = work()
        except BaseException as exc:
            self.drill.steps.append(
                Step(name, began, self.now() - began, False, resource, _said(exc))
            )
            raise
        self.drill.steps.append(Step(name, began, self.now() - began, True, resource, detail))

    def check(self, made: Check) -> None:
        self.drill.checks.append(made)

    def tally(self, resource: str) -> str:
        mine = [c for c in self.drill.checks if c.resource == resource]
        return f"{sum(c.passed for c in mine)} of {len(mine)} checks passed"


def _said(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def restore_part(
    part: Part, box: Sandbox, clock: Clock, declared_at: datetime, progress: Progress
) -> Recovered:
    if part.kind == "postgres":
        return _postgres(part, box, clock, declared_at, progress)
    return _files(part, box, clock, declared_at, progress)


def _files(
    part: Part, box: Sandbox, clock: Clock, declared_at: datetime, progress: Progress
) -> Recovered:
    from reprieve.engine.restore import restore_files

    point = part.point
    assert point is not None
    folder = box.folder(part.resource)
    folder.mkdir(mode=0o700)  # production's data: for the drill's eyes only
    began = clock.now()
    result: dict[str, Any] = {}

    def restore() -> str:
        stats = restore_files(part.vault, point, folder, progress=progress)
        result["bytes"] = stats.bytes
        return f"{stats.files} files, {stats.bytes} bytes from point {point.short_id}"

    clock.step("restore", part.resource, restore)
    restore_s = clock.now() - began
    recovered = Recovered(
        resource=part.resource,
        kind="files",
        vault=part.vault.backend.location,
        point=point.id,
        point_time=point.time,
        recovered_to=point.time,
        rpo_s=max(0.0, ((part.newest_at_declaration or declared_at) - point.time).total_seconds()),
        restore_s=restore_s,
        bytes_read=int(result["bytes"]),
    )
    place = Sandboxed(part.resource, folder)

    def verify() -> str:
        digests, walk = content_digests(part.vault, point.tree, folder, part.resource)
        clock.check(digests)
        for path in walk.sqlite:
            clock.check(sqlite_integrity(path, folder, part.resource))
        for made in declared(part.checks, place):
            clock.check(made)
        return clock.tally(part.resource)

    clock.step("verify", part.resource, verify)
    return recovered


def _postgres(
    part: Part, box: Sandbox, clock: Clock, declared_at: datetime, progress: Progress
) -> Recovered:
    from reprieve.sources.pg_recover import Target
    from reprieve.sources.pg_server import recovery_log
    from reprieve.sources.postgres import base_meta

    folder = box.folder(part.resource)
    if part.recover_to is not None:
        # "Just before" the moment: a commit at that very instant is already the damage.
        when = part.recover_to - timedelta(microseconds=1)
        target = Target("time", when.isoformat())
    else:
        target = Target("latest")
    began = clock.now()
    held: dict[str, Recovery] = {}

    def restore() -> str:
        try:
            held["r"] = recover_into(part.vault, part.resource, folder, target, box, progress)
        except ReprieveError as exc:
            # The server's log is in the sandbox, which goes: keep its end as evidence.
            tail = _tail(recovery_log(folder))
            if tail:
                evidence = {"server_log_tail": tail}
                clock.check(Check("recovery", False, str(exc), part.resource, evidence))
            raise
        r = held["r"]
        return (
            f"base {r.base[:12]} and {r.wal_files} WAL files "
            f"({r.base_bytes + r.wal_bytes} bytes), recovered to "
            f"{r.recovered_to.isoformat() if r.recovered_to else 'the base backup'}"
        )

    clock.step("restore", part.resource, restore)
    recovery = held["r"]
    restore_s = clock.now() - began
    # The restore's own phases, as steps of the timeline ending where it ended.
    at = began
    for phase, seconds in recovery.phases.items():
        clock.drill.steps.append(Step(f"restore: {phase}", at, seconds, True, part.resource))
        at += seconds
    base = part.vault.load_point(recovery.base)
    newest = recovery.recovered_to or datetime.fromisoformat(base_meta(base)["stop_time"])
    if part.recover_to is not None:
        rpo = 0.0  # recovery reached the moment: every commit before it came back
    else:
        wanted = part.newest_at_declaration or declared_at
        rpo = max(0.0, (wanted - newest).total_seconds())
    recovered = Recovered(
        resource=part.resource,
        kind="postgres",
        vault=part.vault.backend.location,
        point=base.id,
        point_time=base.time,
        recovered_to=recovery.recovered_to,
        rpo_s=rpo,
        restore_s=restore_s,
        bytes_read=recovery.base_bytes + recovery.wal_bytes,
    )
    place = sandboxed(part.resource, folder, recovery)

    def verify() -> str:
        accepts, databases = server_accepts(place)
        clock.check(accepts)
        if accepts.passed:
            clock.check(amcheck(place, databases))
            for made in declared(part.checks, place):
                clock.check(made)
        return clock.tally(part.resource)

    clock.step("verify", part.resource, verify)
    return recovered


def recover_into(
    vault: Vault, resource: str, folder: Path, target: Target, box: Sandbox, progress: Progress
) -> Recovery:
    """Recover ``resource`` into ``folder`` of the sandbox and leave it running.

    The copy answers only on its socket, in a folder only root and the cluster's
    user may enter, and trusts those: production's pg_hba.conf (passwords, other
    hosts) neither applies nor leaks in.
    """
    from reprieve.sources.pg_recover import restore_postgres
    from reprieve.sources.postgres import default_os_user

    hba = box.path / f"{resource}.hba.conf"
    hba.write_text("local all all trust\n")
    hba.chmod(0o644)
    return restore_postgres(
        vault,
        resource,
        folder,
        target,
        start=True,
        os_user=default_os_user(),
        listen="",
        progress=progress,
        settings={"hba_file": str(hba)},
    )


def sandboxed(resource: str, folder: Path, recovery: Recovery) -> Sandboxed:
    """Where checks find a recovered cluster: its socket folder and port."""
    from reprieve.sources.pg_server import socket_dir

    host = str(socket_dir(folder.absolute()))
    env = {"PGHOST": host, "PGPORT": str(recovery.port), "PGUSER": "postgres"}
    return Sandboxed(resource, folder, recovery.port, host, env)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def primary_last_commit(dsn: str | None) -> datetime | None:
    """The newest commit on the running primary (needs track_commit_timestamp);
    None when it cannot be read, and the declared moment stands in for it."""
    if not dsn:
        return None
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute("SELECT timestamp FROM pg_last_committed_xact()").fetchone()
    except psycopg.Error:
        return None
    if row is None or row[0] is None:
        return None
    when: datetime = row[0]
    return when.astimezone(UTC)
