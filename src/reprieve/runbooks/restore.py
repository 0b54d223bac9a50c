"""Runbook restore steps: files and PostgreSQL, in-process, through reprieve's own APIs.

The plan and the run choose the point the same way (:func:`choose_files_point`,
and PostgreSQL's own ``choose_base``), so the point a plan names is the one a
run started soon after uses, unless a newer one arrived in between; the run's
evidence names the point it used. A restore's timeout is checked as data
streams in; PostgreSQL's replay phase is bounded by the recovery's own stall
limit instead.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprieve.drills.model import Recovered
from reprieve.errors import NotFoundError, ReprieveError, UsageError
from reprieve.policy.model import VaultSpec
from reprieve.runbooks.model import FilesRestoreSpec, PostgresRestoreSpec
from reprieve.runbooks.steps import Attempt, Description, RunState, StepOutcome, age
from reprieve.vault.crypto import MasterKey
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault, VaultConfig, backend_for


class VaultCache:
    """Opens a runbook's vaults, deriving each key once (the KDF is slow on purpose).

    Every caller gets its own :class:`Vault` and storage client, so steps of a
    parallel group share nothing mutable.
    """

    def __init__(self, named: dict[str, VaultSpec]) -> None:
        self.named = named
        self._opened: dict[str, tuple[VaultConfig, MasterKey, str]] = {}
        self._lock = threading.Lock()

    def open(self, ref: str | VaultSpec) -> tuple[str, Vault]:
        """(the vault's name, or its location when given in place; the vault)."""
        if isinstance(ref, str):
            if ref not in self.named:
                raise UsageError(f"the runbook has no vault named {ref!r}")
            name, spec = ref, self.named[ref]
        else:
            name, spec = ref.url, ref
        with self._lock:
            known = self._opened.get(spec.url)
            if known is None:
                from reprieve.scheduler.execute import secret_for

                vault = Vault.open(backend_for(spec.url), secret_for(name, spec))
                self._opened[spec.url] = (vault.config, vault.master, vault.key_name)
                return name, vault
        return name, Vault(backend_for(spec.url), *known)


class Deadline:
    """Progress that stops a restore when its attempt is out of time or interrupted."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.bytes = 0

    def start(self, label: str, total_bytes: int | None = None) -> None:
        self.attempt.check()

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        self.bytes += nbytes
        self.attempt.check()

    def finish(self) -> None:
        return None


def shown_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def target_state(target: Path) -> tuple[str, int]:
    """(how the target folder stands, how many entries it holds; -1 when unusable)."""
    try:
        if not target.exists():
            return f"{target} does not exist (it will be created)", 0
        if not target.is_dir():
            return f"{target} is a file, not a folder", -1
        entries = sum(1 for _ in target.iterdir())
    except OSError as exc:
        return f"{target} cannot be read: {exc.strerror}", -1
    return (f"{target} holds {entries} entries" if entries else f"{target} is empty"), entries


def choose_files_point(vault: Vault, spec: FilesRestoreSpec, vault_name: str) -> Point:
    """The point ``spec`` names: the newest, an id prefix, or the newest before a time."""
    if spec.point != "latest":
        point = vault.find_point(spec.point)
        if point.resource != spec.resource or point.kind != "files":
            raise UsageError(
                f"point {point.short_id} is a {point.kind} point of {point.resource}, "
                f"not a files point of {spec.resource}"
            )
        return point
    points = [p for p in vault.points(spec.resource) if p.kind == "files"]
    if spec.before is not None:
        before = spec.before
        points = [p for p in points if p.time <= before]
        if not points:
            raise NotFoundError(
                f"no files point of {spec.resource} at or before {shown_time(before)} "
                f"in vault {vault_name}"
            )
    if not points:
        raise NotFoundError(f"no files point of {spec.resource} in vault {vault_name}")
    return points[-1]


class FilesRestoreStep:
    verifies = False
    default_timeout: float | None = None

    def __init__(self, spec: FilesRestoreSpec) -> None:
        self.spec = spec

    def describe(self, state: RunState) -> Description:
        spec = self.spec
        target = Path(spec.target)
        name = spec.vault if isinstance(spec.vault, str) else spec.vault.url
        action = f"restore files of {spec.resource} from vault {name} into {target}"
        shown, entries = target_state(target)
        try:
            name, vault = state.vaults.open(spec.vault)
            point = choose_files_point(vault, spec, name)
        except ReprieveError as exc:
            return Description(action, now=shown, problem=str(exc))
        details = {"vault": name, "point": point.id, "point_time": point.time.isoformat()}
        now = f"point {point.short_id} from {shown_time(point.time)} ({age(point.time)}); {shown}"
        description = Description(action, now=now, details=details)
        if entries < 0:
            description.problem = shown
        elif entries and not spec.overwrite:
            description.problem = (
                f"would be refused: {target} is not empty (set overwrite: true to replace it)"
            )
        elif entries:
            description.change = f"the {entries} entries in {target} would be overwritten"
        else:
            description.change = f"{target} gets the files of point {point.short_id}"
        return description

    def run(self, attempt: Attempt) -> StepOutcome:
        from reprieve.engine.restore import restore_files

        spec = self.spec
        target = Path(spec.target)
        name, vault = attempt.state.vaults.open(spec.vault)
        point = choose_files_point(vault, spec, name)
        _, entries = target_state(target)
        began = time.monotonic()
        stats = restore_files(vault, point, target, spec.include, spec.overwrite, Deadline(attempt))
        took = time.monotonic() - began
        evidence = {
            "vault": name,
            "point": point.id,
            "point_time": point.time.isoformat(),
            "target": str(target.absolute()),
            "files": stats.files,
            "dirs": stats.dirs,
            "bytes": stats.bytes,
        }
        declared = attempt.state.declared_at
        recovered = Recovered(
            resource=spec.resource,
            kind="files",
            vault=name,
            point=point.id,
            point_time=point.time,
            recovered_to=point.time,
            rpo_s=max(0.0, (declared - point.time).total_seconds()),
            restore_s=took,
            bytes_read=stats.bytes,
        )
        if entries > 0:
            undo = f"what was in {target} before was overwritten and is not kept"
        else:
            undo = f"remove {target} (it was empty or absent before)"
        return StepOutcome(
            f"restored {stats.files} files of point {point.short_id} "
            f"({shown_time(point.time)}) into {target}",
            evidence,
            changed=f"wrote {stats.files} files ({stats.bytes} bytes) into {target}",
            undo=undo,
            recovered=recovered,
        )


class PostgresRestoreStep:
    verifies = False
    default_timeout: float | None = None

    def __init__(self, spec: PostgresRestoreSpec) -> None:
        self.spec = spec

    def _target(self) -> Any:
        from reprieve.sources.pg_recover import Target

        spec = self.spec
        if spec.to_time is not None:
            return Target("time", spec.to_time.isoformat())
        if spec.to_lsn is not None:
            return Target("lsn", spec.to_lsn)
        if spec.to_xid is not None:
            return Target("xid", spec.to_xid)
        return Target("latest")

    def describe(self, state: RunState) -> Description:
        from reprieve.sources.pg_inspect import Window
        from reprieve.sources.pg_recover import choose_base
        from reprieve.sources.postgres import base_points

        spec = self.spec
        target = Path(spec.target)
        to = self._target()
        asked = (
            "the newest data the vault holds" if to.kind == "latest" else f"{to.kind} {to.value}"
        )
        name = spec.vault if isinstance(spec.vault, str) else spec.vault.url
        action = f"recover {spec.resource} from vault {name} into {target}, to {asked}"
        if spec.start:
            action += f"; leave it running on port {spec.port or 'a free port'}"
        shown, entries = target_state(target)
        try:
            name, vault = state.vaults.open(spec.vault)
            # The window's end is only known after reading the newest WAL: the
            # plan names the base backup, the run finds out how far WAL reaches.
            base = choose_base(base_points(vault, spec.resource), to, Window(None, None))
        except ReprieveError as exc:
            return Description(action, now=shown, problem=str(exc))
        details = {"vault": name, "point": base.id, "point_time": base.time.isoformat()}
        now = (
            f"base backup {base.short_id} from {shown_time(base.time)} ({age(base.time)}); {shown}"
        )
        description = Description(action, now=now, details=details)
        if entries:
            description.problem = (
                shown if entries < 0 else f"would be refused: {target} is not empty"
            )
        elif spec.start and spec.port is not None and _port_taken(spec.port):
            description.problem = f"port {spec.port} is already in use"
        else:
            description.change = f"a new cluster in {target}"
        return description

    def run(self, attempt: Attempt) -> StepOutcome:
        from reprieve.sources.pg_recover import restore_postgres
        from reprieve.sources.postgres import base_points, default_os_user

        spec = self.spec
        target = Path(spec.target)
        name, vault = attempt.state.vaults.open(spec.vault)
        report = restore_postgres(
            vault,
            spec.resource,
            target,
            self._target(),
            spec.port,
            spec.start,
            spec.os_user or default_os_user(),
            spec.listen,
            Deadline(attempt),
        )
        base = next((p for p in base_points(vault, spec.resource) if p.id == report.base), None)
        evidence = {"vault": name, "point": report.base, **report.to_json()}
        recovered = Recovered(
            resource=spec.resource,
            kind="postgres",
            vault=name,
            point=report.base,
            point_time=base.time if base else attempt.state.declared_at,
            recovered_to=report.recovered_to,
            rpo_s=report.rpo_gap_s,
            restore_s=report.duration_s,
            bytes_read=report.base_bytes + report.wal_bytes,
        )
        upto = report.recovered_to.isoformat() if report.recovered_to else report.recovered_lsn
        running = f"; running on port {report.port}" if report.running else ""
        if report.running:
            undo = f"stop it (pg_ctl -D {report.target} stop) and remove {report.target}"
        else:
            undo = f"remove {report.target}"
        return StepOutcome(
            f"recovered {spec.resource} to {upto} from base {report.base[:12]}{running}",
            evidence,
            changed=f"a new cluster of {spec.resource} in {report.target}{running}",
            undo=undo,
            recovered=recovered,
        )


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
