"""What a drill (or a runbook run) records: a timeline of steps, the checks
with their evidence, what was recovered, and the RTO and RPO achieved.

The JSON form (:meth:`Drill.to_json`) is the contract: ``drill run --json``
prints it, the catalog keeps it whole, and the report is rendered from it.
Times inside a drill are seconds from its start (``at_s``), so the timeline
reads the same on any clock. RTO is the wall time from the start to the end
of the last verification (teardown is not part of it); RPO is the gap
between the moment the disaster is declared and the newest data recovered.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Scenario(StrEnum):
    FILES_LOSS = "namespace-or-files-loss"
    DATABASE_FAILURE = "database-failure"
    DATA_CORRUPTION = "data-corruption"
    REGION_FAILURE = "region-failure"
    RANSOMWARE = "ransomware"
    FAILOVER = "failover"  # a runbook run: the plan itself is the scenario


class DrillKind(StrEnum):
    DRILL = "drill"
    RUNBOOK = "runbook"


def new_id(kind: DrillKind, when: datetime) -> str:
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{'d' if kind is DrillKind.DRILL else 'r'}-{stamp}-{secrets.token_hex(3)}"


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="milliseconds") if when else None


def _when(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class Step:
    """One timed stage: ``restore``, ``verify``, a runbook step; ``ok`` False stops a run."""

    name: str
    at_s: float
    duration_s: float
    ok: bool = True
    resource: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resource": self.resource,
            "at_s": round(self.at_s, 3),
            "duration_s": round(self.duration_s, 3),
            "ok": self.ok,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Step:
        return cls(
            doc["name"], doc["at_s"], doc["duration_s"], doc["ok"], doc["resource"], doc["detail"]
        )


@dataclass
class Check:
    """One verification and the evidence it rests on (digests, counts, output)."""

    name: str
    passed: bool
    detail: str
    resource: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resource": self.resource,
            "passed": self.passed,
            "detail": self.detail,
            "evidence": self.evidence,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Check:
        return cls(doc["name"], doc["passed"], doc["detail"], doc["resource"], doc["evidence"])


@dataclass
class Recovered:
    """What one resource came back as, and from where."""

    resource: str
    kind: str
    vault: str
    point: str
    point_time: datetime
    recovered_to: datetime | None
    rpo_s: float | None
    restore_s: float
    bytes_read: int
    locked_until: datetime | None = None
    # This resource's own time, from choosing its point to its last check.
    span_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "kind": self.kind,
            "vault": self.vault,
            "point": self.point,
            "point_time": _iso(self.point_time),
            "recovered_to": _iso(self.recovered_to),
            "rpo_s": None if self.rpo_s is None else round(self.rpo_s, 3),
            "restore_s": round(self.restore_s, 3),
            "bytes_read": self.bytes_read,
            "locked_until": _iso(self.locked_until),
            "span_s": None if self.span_s is None else round(self.span_s, 3),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Recovered:
        point_time = _when(doc["point_time"])
        assert point_time is not None
        return cls(
            doc["resource"],
            doc["kind"],
            doc["vault"],
            doc["point"],
            point_time,
            _when(doc["recovered_to"]),
            doc["rpo_s"],
            doc["restore_s"],
            doc["bytes_read"],
            _when(doc.get("locked_until")),
            doc.get("span_s"),
        )


@dataclass
class Drill:
    id: str
    kind: DrillKind
    scenario: str
    subject: str  # the resource, "tenant:<name>", or the runbook's name
    started_at: datetime
    declared_at: datetime
    tier: str | None = None
    tenant: str | None = None
    rto_target_s: float | None = None
    rpo_target_s: float | None = None
    rto_s: float | None = None
    finished_at: datetime | None = None
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    recovered: list[Recovered] = field(default_factory=list)
    failure: str | None = None
    teardown: str = ""
    # Every resource the drill set out to recover (name → kind), recovered or not.
    resources: dict[str, str] = field(default_factory=dict)
    # A runbook run resumed part-way (--from): its time is not the whole RTO.
    resumed: bool = False
    # What stopped the drill, as raised (not kept in the document).
    error: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def rpo_s(self) -> float | None:
        gaps = [r.rpo_s for r in self.recovered if r.rpo_s is not None]
        return max(gaps) if gaps else None

    @property
    def rto_met(self) -> bool:
        if self.rto_s is None:
            return False
        return self.rto_target_s is None or self.rto_s <= self.rto_target_s

    @property
    def rpo_met(self) -> bool:
        if self.kind is DrillKind.RUNBOOK and not self.recovered:
            return True  # a runbook that restores nothing has no RPO to miss
        rpo = self.rpo_s
        if rpo is None:
            return False
        return self.rpo_target_s is None or rpo <= self.rpo_target_s

    @property
    def passed(self) -> bool:
        return (
            self.failure is None
            and all(c.passed for c in self.checks)
            and all(s.ok for s in self.steps)
            and self.rto_met
            and self.rpo_met
        )

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for r in self.recovered)

    def resource_passed(self, resource: str) -> bool:
        """Whether this resource's own part held: recovered, every step and check of
        it passed, its RPO within target, and the drill not stopped by a failure."""
        part = next((r for r in self.recovered if r.resource == resource), None)
        if part is None or self.failure is not None or not self.rto_met:
            return False
        mine = [c.passed for c in self.checks if c.resource in (None, resource)]
        steps = [s.ok for s in self.steps if s.resource in (None, resource)]
        within = self.rpo_target_s is None or (
            part.rpo_s is not None and part.rpo_s <= self.rpo_target_s
        )
        return all(mine) and all(steps) and within

    def reasons(self) -> list[str]:
        """Why the drill did not pass, one short phrase each."""
        why = [self.failure] if self.failure else []
        why += [
            f"step {s.name} failed: {s.detail}"
            for s in self.steps
            if not s.ok and s.detail != self.failure  # the failure already says it
        ]
        why += [f"check {c.name} failed: {c.detail}" for c in self.checks if not c.passed]
        if self.failure is None and not self.rto_met:
            why.append(f"RTO {_secs(self.rto_s)} over the target {_secs(self.rto_target_s)}")
        if self.failure is None and not self.rpo_met:
            why.append(f"RPO {_secs(self.rpo_s)} over the target {_secs(self.rpo_target_s)}")
        return why

    def to_json(self) -> dict[str, Any]:
        return {
            "drill": self.id,
            "kind": self.kind.value,
            "scenario": self.scenario,
            "subject": self.subject,
            "tenant": self.tenant,
            "tier": self.tier,
            "started_at": _iso(self.started_at),
            "declared_at": _iso(self.declared_at),
            "finished_at": _iso(self.finished_at),
            "passed": self.passed,
            "reasons": self.reasons(),
            "rto_s": None if self.rto_s is None else round(self.rto_s, 3),
            "rto_target_s": self.rto_target_s,
            "rto_met": self.rto_met,
            "rpo_s": None if self.rpo_s is None else round(self.rpo_s, 3),
            "rpo_target_s": self.rpo_target_s,
            "rpo_met": self.rpo_met,
            "bytes_read": self.bytes_read,
            "steps": [s.to_json() for s in self.steps],
            "checks": [c.to_json() for c in self.checks],
            "recovered": [r.to_json() for r in self.recovered],
            "failure": self.failure,
            "teardown": self.teardown,
            "resources": self.resources,
            "resumed": self.resumed,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Drill:
        started, declared = _when(doc["started_at"]), _when(doc["declared_at"])
        assert started is not None and declared is not None
        return cls(
            id=doc["drill"],
            kind=DrillKind(doc["kind"]),
            scenario=doc["scenario"],
            subject=doc["subject"],
            started_at=started,
            declared_at=declared,
            tier=doc["tier"],
            tenant=doc["tenant"],
            rto_target_s=doc["rto_target_s"],
            rpo_target_s=doc["rpo_target_s"],
            rto_s=doc["rto_s"],
            finished_at=_when(doc["finished_at"]),
            steps=[Step.from_json(s) for s in doc["steps"]],
            checks=[Check.from_json(c) for c in doc["checks"]],
            recovered=[Recovered.from_json(r) for r in doc["recovered"]],
            failure=doc["failure"],
            teardown=doc["teardown"],
            resources=dict(doc.get("resources") or {}),
            resumed=bool(doc.get("resumed")),
        )


def _secs(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:.1f} s"
