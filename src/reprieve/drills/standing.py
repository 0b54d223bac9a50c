"""Where each resource stands on proven recovery, from the catalog alone.

* **Last drill**: when, whether it passed, the RTO and RPO it measured.
* **Due / overdue**: a drill is due one tier period (a month, a quarter…)
  after the last one (or after the policy was applied); it is overdue more
  than ``GRACE`` after that.
* **RTO trend**: the measured RTO is ``at_risk`` past 80% of the target, or
  when each of the last three drills took longer than the one before and
  the newest is past half the target.
* **Predicted RTO**: the bytes a restore of the newest point must read,
  divided by the restore throughput of this resource's past drills (or, with
  none, of every drill of the same kind), plus the median time its drills
  spent outside the restore (choosing, starting, checking). No drill of the
  kind yet: no prediction.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reprieve.catalog.db import as_utc
from reprieve.catalog.models import DrillResource, PointRecord
from reprieve.catalog.points import vault_key
from reprieve.drills.store import history, last_per_resource
from reprieve.policy.model import Policy
from reprieve.scheduler.plan import DRILLED_KINDS
from reprieve.scheduler.status import state_of, vaults_of

GRACE = timedelta(days=7)
HISTORY = 5


@dataclass(frozen=True)
class Standing:
    resource: str
    rto_target_s: float
    last_drill: datetime | None
    passed: bool | None
    rto_s: float | None
    rpo_s: float | None
    due: datetime
    overdue: bool
    rto_trend: str  # "ok", "at_risk", "breached", or "unmeasured"
    predicted_rto_s: float | None
    prediction_basis: str

    @property
    def prediction_state(self) -> str:
        if self.predicted_rto_s is None:
            return "unmeasured"
        return state_of(self.predicted_rto_s, self.rto_target_s)

    def to_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat(timespec="seconds").replace("+00:00", "Z") if t else None

        def rounded(v: float | None) -> float | None:
            return None if v is None else round(v, 1)

        return {
            "last_drill": iso(self.last_drill),
            "drill_passed": self.passed,
            "drill_rto_s": rounded(self.rto_s),
            "drill_rpo_s": rounded(self.rpo_s),
            "drill_due": iso(self.due),
            "drill_overdue": self.overdue,
            "rto_trend": self.rto_trend,
            "predicted_rto_s": rounded(self.predicted_rto_s),
            "predicted_rto_state": self.prediction_state,
            "prediction_basis": self.prediction_basis,
        }


def _trend(parts: list[DrillResource], target_s: float) -> str:
    measured = [p.rto_s for p in parts if p.rto_s is not None]  # newest first
    if not measured:
        return "unmeasured"
    state = state_of(measured[0], target_s)
    rising = len(measured) >= 3 and measured[0] > measured[1] > measured[2]
    if state == "ok" and rising and measured[0] > 0.5 * target_s:
        return "at_risk"
    return state


def _throughput(parts: list[DrillResource]) -> float | None:
    rates = [
        p.bytes_read / p.restore_s
        for p in parts
        if p.restore_s is not None and p.restore_s > 0 and p.bytes_read
    ]
    return statistics.median(rates) if rates else None


def _overhead(parts: list[DrillResource]) -> float:
    """The median time a drill of the resource spent outside its restore."""
    spans = [
        p.rto_s - p.restore_s for p in parts if p.rto_s is not None and p.restore_s is not None
    ]
    return max(0.0, statistics.median(spans)) if spans else 0.0


def _newest_bytes(session: Session, resource: str, vaults: list[str]) -> int | None:
    if not vaults:
        return None
    row = session.execute(
        select(PointRecord.bytes)
        .where(
            PointRecord.resource == resource,
            PointRecord.vault.in_(vaults),
            PointRecord.forgotten_at.is_(None),
        )
        .order_by(PointRecord.time.desc())
        .limit(1)
    ).first()
    return int(row[0]) if row else None


def _kind_parts(session: Session, kind: str) -> list[DrillResource]:
    return list(
        session.scalars(
            select(DrillResource)
            .where(DrillResource.kind == kind)
            .order_by(DrillResource.started_at.desc())
            .limit(4 * HISTORY)
        )
    )


def standings(
    session: Session, policy: Policy, since: datetime, now: datetime
) -> dict[str, Standing]:
    last = last_per_resource(session)
    found: dict[str, Standing] = {}
    for name, spec in policy.resources.items():
        if spec.kind.value not in DRILLED_KINDS:
            continue  # no drill of its kind exists yet: it can be neither due nor overdue
        tier = policy.tiers[policy.tier_of(spec)]
        target = tier.rto.total_seconds()
        newest = last.get(name)
        parts = history(session, name, HISTORY)
        last_at = as_utc(newest.started_at) if newest else None
        due = (last_at or since) + tier.drill_every
        basis_parts, basis = parts, "this resource's drills"
        if _throughput(parts) is None:
            basis_parts, basis = _kind_parts(session, spec.kind.value), f"{spec.kind} drills"
        rate = _throughput(basis_parts)
        primary, _ = vaults_of(policy, name)
        size = _newest_bytes(session, name, [vault_key(policy.vaults[v].url) for v in primary])
        predicted = None
        if rate is not None and size is not None:
            predicted = size / rate + _overhead(basis_parts)
            basis = f"{size} bytes at {rate / 2**20:.1f} MiB/s measured in {basis}"
        else:
            basis = "no drill measured yet" if rate is None else "no point yet"
        found[name] = Standing(
            resource=name,
            rto_target_s=target,
            last_drill=last_at,
            passed=newest.passed if newest else None,
            rto_s=newest.rto_s if newest else None,
            rpo_s=newest.rpo_s if newest else None,
            due=due,
            overdue=now > due + GRACE,
            rto_trend=_trend(parts, target),
            predicted_rto_s=predicted,
            prediction_basis=basis,
        )
    return found
