"""Finding when a database went bad, for a data-corruption drill given no moment.

The resource's own checks are the oracle. The newest state is recovered
first: if every check holds there is nothing to find. Then the end of the
newest base backup, which must pass (damage older than that is out of this
base's reach). Between the two, point-in-time recoveries halve the window
until it is under ``RESOLUTION`` (or ``MOST_PROBES`` recoveries were made):
the last good moment is where the drill then recovers to, and the first bad
one is the moment the disaster is declared. Each probe is a full recovery
into the sandbox, checked, stopped, and removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reprieve.drills.model import Check
from reprieve.drills.restore import Clock, recover_into, sandboxed
from reprieve.drills.sandbox import Sandbox
from reprieve.drills.verify import declared, server_accepts
from reprieve.engine.progress import NullProgress
from reprieve.errors import NotFoundError, ReprieveError, UsageError
from reprieve.policy.model import Verification
from reprieve.vault.repository import Vault

RESOLUTION = timedelta(seconds=1)
MOST_PROBES = 16


@dataclass(frozen=True)
class Probe:
    at: datetime | None  # None: the newest state
    passed: bool
    why: str
    recovered_to: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat() if self.at else "newest",
            "passed": self.passed,
            "why": self.why,
            "recovered_to": self.recovered_to.isoformat() if self.recovered_to else None,
        }


def _probe(
    vault: Vault,
    resource: str,
    checks: list[Verification],
    box: Sandbox,
    at: datetime | None,
    number: int,
) -> Probe:
    from reprieve.sources.pg_recover import Target, discard
    from reprieve.sources.pg_server import stop_server
    from reprieve.sources.postgres import default_os_user

    folder = box.folder(f".probe-{number}")
    target = Target("time", at.isoformat()) if at else Target("latest")
    recovery = recover_into(vault, resource, folder, target, box, NullProgress())
    try:
        place = sandboxed(resource, folder, recovery)
        accepts, _ = server_accepts(place)
        found = [accepts, *declared(checks, place)] if accepts.passed else [accepts]
    finally:
        stop_server(folder, default_os_user())
        discard(folder)
    bad = [c for c in found if not c.passed]
    why = f"{bad[0].name}: {bad[0].detail}" if bad else "every check holds"
    return Probe(at, not bad, why, recovery.recovered_to)


def locate_damage(
    vault: Vault, resource: str, checks: list[Verification], box: Sandbox, clock: Clock
) -> tuple[datetime, datetime]:
    """(the last moment every check held, the first moment one failed)."""
    from reprieve.sources.postgres import base_meta, base_points

    if not [c for c in checks if c.sql is not None or c.command is not None]:
        raise UsageError(
            f"{resource} declares no check that could see damage; give --at TIME, or "
            "declare sql or command checks in the policy"
        )
    bases = base_points(vault, resource)
    if not bases:
        raise NotFoundError(f"no base backup of {resource!r} in {vault.backend.location}")
    probes: list[Probe] = []

    def probe(at: datetime | None) -> Probe:
        done = _probe(vault, resource, checks, box, at, len(probes))
        probes.append(done)
        return done

    newest = probe(None)
    if newest.passed:
        raise UsageError(
            f"every check of {resource} holds on its newest state: no damage to locate; "
            "give --at TIME"
        )
    good = datetime.fromisoformat(base_meta(bases[-1])["stop_time"])
    if not probe(good).passed:
        raise NotFoundError(
            f"the checks of {resource} fail already at its newest base backup "
            f"({good.isoformat(timespec='seconds')}): the damage is older"
        )
    bad = newest.recovered_to or clock.drill.declared_at
    while bad - good > RESOLUTION and len(probes) < MOST_PROBES:
        middle = good + (bad - good) / 2
        try:
            passed = probe(middle).passed
        except ReprieveError as exc:  # a moment recovery cannot reach counts as bad
            probes.append(Probe(middle, False, str(exc), None))
            passed = False
        if passed:
            good = middle
        else:
            bad = middle
    clock.check(
        Check(
            "corruption located",
            True,
            f"checks hold at {good.isoformat(timespec='milliseconds')} and fail at "
            f"{bad.isoformat(timespec='milliseconds')} ({len(probes)} recoveries)",
            resource,
            {"last_good": good.isoformat(), "first_bad": bad.isoformat(),
             "probes": [p.to_json() for p in probes]},
        )
    )  # fmt: skip
    return good, bad
