"""Running a drill: choose what the scenario allows, restore, verify, measure.

Scenarios, and what each changes:

* ``namespace-or-files-loss`` and ``database-failure``: the newest point
  (for a database, the newest commit in the vault) from the primary vault.
* ``data-corruption``: the newest state before the moment given with
  ``at``. Without one, the moment is detected with the resource's checks:
  for files, points are restored newest first until one passes every check,
  and the oldest point that failed marks the corruption; for a database,
  point-in-time recoveries bisect the WAL after the newest base backup
  (``drills/locate.py``).
* ``region-failure``: only the DR vault is opened (the rule's copy target
  or the one given); the primary is never contacted.
* ``ransomware``: the primary's credentials are taken as compromised. The
  point comes from a locked vault (DR first), must be locked by storage
  past now, and must be unchanged: its name is the hash of its bytes, and
  where storage keeps versions, its first version is the current one.

The drill's RTO is the wall time from its start to the end of the last
check; its RPO the largest gap, over its resources, between the newest data
at the declared moment and the newest data recovered. A drill passes when
every step and check holds and both are within the tier's targets.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reprieve.drills.locate import locate_damage
from reprieve.drills.model import Check, Drill, DrillKind, Scenario, new_id
from reprieve.drills.restore import Clock, Part, primary_last_commit, restore_part
from reprieve.drills.sandbox import Sandbox, reap
from reprieve.drills.verify import Sandboxed, content_digests, declared, sqlite_integrity
from reprieve.engine.progress import NullProgress, Progress
from reprieve.engine.restore import restore_files
from reprieve.errors import (
    Interrupted,
    NotFoundError,
    RefusedError,
    ReprieveError,
    UsageError,
)
from reprieve.policy.model import Verification
from reprieve.vault.crypto import content_name
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault


@dataclass
class Subject:
    """One resource to drill, as the policy (or the command line) describes it."""

    name: str
    kind: str | None  # None: read from the vault's points
    tier: str | None
    rto_s: float | None
    rpo_s: float | None
    primary: list[str] = field(default_factory=list)  # vault locations
    dr: list[str] = field(default_factory=list)
    checks: list[Verification] = field(default_factory=list)
    connection: str | None = None


@dataclass
class Request:
    subjects: list[Subject]
    scenario: Scenario
    subject: str  # the resource, or tenant:<name>
    tenant: str | None = None
    at: datetime | None = None  # data-corruption: the moment of the damage
    from_vault: str | None = None


Opener = Callable[[str], Vault]
INTERRUPTED = "interrupted"


def run_drill(
    request: Request,
    open_vault: Opener,
    progress: Progress | None = None,
    announce: Callable[[str], None] = lambda _: None,
) -> Drill:
    """Run the drill to its end (or its interruption, ``failure`` then being
    ``INTERRUPTED``); the result says whether it passed. The sandbox is gone
    when this returns."""
    for gone in reap():
        announce(f"cleaned up after an earlier drill: {gone}")
    started = datetime.now(UTC)
    declared_at = request.at or started
    targets_rto = [s.rto_s for s in request.subjects if s.rto_s is not None]
    targets_rpo = [s.rpo_s for s in request.subjects if s.rpo_s is not None]
    tiers = sorted({s.tier for s in request.subjects if s.tier})
    drill = Drill(
        id=new_id(DrillKind.DRILL, started),
        kind=DrillKind.DRILL,
        scenario=request.scenario.value,
        subject=request.subject,
        started_at=started,
        declared_at=declared_at,
        tier=",".join(tiers) or None,
        tenant=request.tenant,
        rto_target_s=min(targets_rto) if targets_rto else None,
        rpo_target_s=min(targets_rpo) if targets_rpo else None,
    )
    clock = Clock(drill)
    # The newest data at the declared moment is read before anything else runs.
    newest = {
        s.name: primary_last_commit(s.connection) if request.at is None else None
        for s in request.subjects
    }
    box = Sandbox(drill.id)
    try:
        with box:
            for subject in request.subjects:
                announce(f"{subject.name}: restoring")
                _drill_one(request, subject, newest[subject.name], open_vault, box, clock, progress)
            drill.rto_s = clock.now()
    except ReprieveError as exc:
        drill.failure, drill.error = str(exc), exc
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C or SIGTERM: torn down, recorded
        drill.failure = INTERRUPTED
    except Exception as exc:  # a fault nobody foresaw is still a failed drill, on record
        drill.failure = f"unexpected error: {exc!r}"
    drill.rto_s = drill.rto_s or clock.now()
    drill.teardown = box.outcome
    drill.finished_at = datetime.now(UTC)
    return drill


def _drill_one(
    request: Request,
    subject: Subject,
    newest: datetime | None,
    open_vault: Opener,
    box: Sandbox,
    clock: Clock,
    progress: Progress | None,
) -> None:
    holder: dict[str, Part] = {}
    began = clock.now()
    clock.drill.resources[subject.name] = subject.kind or "unknown"

    def choose() -> str:
        holder["part"] = part = _choose(request, subject, open_vault, box, clock)
        if part.point is not None:
            chosen = f"point {part.point.short_id} of {_when(part.point.time)}"
        elif part.recover_to is not None:
            chosen = f"just before {_when(part.recover_to)}"
        else:
            chosen = "the newest commit"
        return f"{chosen} from {part.vault.backend.location}"

    clock.step("choose point", subject.name, choose)
    part = holder["part"]
    clock.drill.resources[subject.name] = part.kind
    part.newest_at_declaration = newest
    recovered = restore_part(
        part, box, clock, request.at or clock.drill.declared_at, progress or NullProgress()
    )
    if part.locked is not None:
        name = f"points/{part.locked.id}"
        until = part.vault.backend.locked_until(name) or part.locked.retain_until
        recovered.locked_until = until
    recovered.span_s = clock.now() - began
    clock.drill.recovered.append(recovered)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else "-"


def _vault_for(request: Request, subject: Subject, open_vault: Opener) -> Vault:
    scenario = request.scenario
    if request.from_vault:
        return open_vault(request.from_vault)
    if scenario is Scenario.REGION_FAILURE:
        if not subject.dr:
            raise UsageError(
                f"{subject.name} has no DR vault (no rule copies it); give --from-vault"
            )
        return open_vault(subject.dr[0])
    if scenario is Scenario.RANSOMWARE:
        for location in [*subject.dr, *subject.primary]:
            vault = open_vault(location)
            if vault.config.lock:
                return vault
        raise UsageError(
            f"no vault of {subject.name} is locked; a ransomware drill restores from a "
            "locked vault (`vault init --lock`), or give --from-vault"
        )
    if not subject.primary:
        raise UsageError(f"no vault for {subject.name}; give --vault")
    return open_vault(subject.primary[0])


def _choose(
    request: Request, subject: Subject, open_vault: Opener, box: Sandbox, clock: Clock
) -> Part:
    vault = _vault_for(request, subject, open_vault)
    points = vault.points(subject.name)
    if not points:
        raise NotFoundError(f"no point of {subject.name!r} in {vault.backend.location}")
    kind = subject.kind or points[-1].kind
    if kind not in ("files", "postgres"):
        raise UsageError(f"drills of {kind} resources are not supported yet")
    if request.scenario is Scenario.REGION_FAILURE:
        clock.check(_dr_only(subject, vault))
    if kind == "postgres":
        part = Part(subject.name, kind, vault, subject.checks, recover_to=request.at)
        if request.scenario is Scenario.RANSOMWARE:
            # Recovery starts from the newest base backup: it must be the locked one.
            # (The WAL after it is locked as it arrives, for the vault's minimum retention.)
            bases = [p for p in points if p.kind == "postgres"]
            part.locked = _locked_point(vault, bases, clock, subject.name)
            if part.locked.id != bases[-1].id:
                raise RefusedError(
                    f"the newest base backup of {subject.name} is not locked past now; "
                    "a ransomware drill recovers only from a locked one"
                )
        if request.scenario is Scenario.DATA_CORRUPTION and request.at is None:
            good, bad = locate_damage(vault, subject.name, subject.checks, box, clock)
            clock.drill.declared_at = bad
            # The recovery goes to "just before" recover_to: to the last good moment.
            part.recover_to = good + timedelta(microseconds=1)
        return part
    points = [p for p in points if p.kind == "files"]
    locked = None
    if request.scenario is Scenario.RANSOMWARE:
        point = locked = _locked_point(vault, points, clock, subject.name)
    elif request.scenario is Scenario.DATA_CORRUPTION:
        point = _before_damage(request, subject, vault, points, box, clock)
    else:
        point = points[-1]
    return Part(subject.name, kind, vault, subject.checks, point=point, locked=locked)


def _dr_only(subject: Subject, vault: Vault) -> Check:
    used = vault.backend.location
    primary = [p for p in subject.primary if p != used]
    passed = used not in subject.primary
    detail = (
        f"restored from {used} only; primary {', '.join(primary) or '(none)'} not contacted"
        if passed
        else f"{used} is a primary vault of {subject.name}"
    )
    evidence = {"used": used, "primary": subject.primary, "dr": subject.dr}
    return Check("DR vault only", passed, detail, subject.name, evidence)


def _locked_point(vault: Vault, points: list[Point], clock: Clock, resource: str) -> Point:
    """The newest point storage keeps locked past now, proven unchanged."""
    now = datetime.now(UTC)
    for point in reversed(points):
        name = f"points/{point.id}"
        until = vault.backend.locked_until(name)
        # A folder cannot lock files: there only reprieve enforces the date.
        enforced = "storage" if until is not None else "reprieve only (a folder vault)"
        until = until or point.retain_until
        if until is None or until <= now:
            continue
        data = vault.backend.get(name)
        first = vault.backend.first_version(name)
        same_name = content_name(data) == point.id
        same_first = first is None or first == data
        evidence = {
            "point": point.id,
            "lock_mode": vault.config.lock,
            "locked_until": until.isoformat(),
            "enforced_by": enforced,
            "name_is_hash_of_bytes": same_name,
            "first_version": "not kept by this storage"
            if first is None
            else ("identical" if same_first else "differs"),
        }
        passed = same_name and same_first
        detail = f"point {point.short_id} locked ({vault.config.lock}) until {_when(until)}, " + (
            "unchanged since written" if passed else "CHANGED since written"
        )
        clock.check(Check("point locked and unchanged", passed, detail, resource, evidence))
        return point
    raise NotFoundError(f"no point of {resource!r} in {vault.backend.location} is locked past now")


def _before_damage(
    request: Request,
    subject: Subject,
    vault: Vault,
    points: list[Point],
    box: Sandbox,
    clock: Clock,
) -> Point:
    if request.at is not None:
        before = [p for p in points if p.time < request.at]
        if not before:
            raise NotFoundError(f"no point of {subject.name!r} before {_when(request.at)}")
        return before[-1]
    # Detect: the newest point whose restored copy passes every check.
    failing: list[dict[str, str]] = []
    for point in reversed(points):
        folder = box.folder(f".probe-{point.short_id}")
        restore_files(vault, point, folder)
        digests, walk = content_digests(vault, point.tree, folder, subject.name)
        found = [digests, *(sqlite_integrity(p, folder, subject.name) for p in walk.sqlite)]
        found += list(declared(subject.checks, Sandboxed(subject.name, folder)))
        shutil.rmtree(folder, ignore_errors=True)
        bad = [c for c in found if not c.passed]
        if not bad:
            if failing:
                clock.drill.declared_at = datetime.fromisoformat(failing[-1]["time"])
            clock.check(
                Check(
                    "corruption located",
                    True,
                    f"{len(failing)} newer point(s) fail their checks; point "
                    f"{point.short_id} is the newest that passes",
                    subject.name,
                    {"failing_points": failing, "chosen": point.id},
                )
            )
            return point
        failing.append(
            {
                "point": point.id,
                "time": point.time.isoformat(),
                "failed": bad[0].name,
                "detail": bad[0].detail,
            }
        )
    raise NotFoundError(f"every point of {subject.name!r} fails its checks")
