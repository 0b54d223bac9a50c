"""Where every resource stands against its tier's RPO, from the catalog alone.

A resource's RPO now is the age of its newest point in the primary region
(the vaults its rules back up to); its DR RPO the same in the vaults its
copies go to. Replication lag is how long the DR region has been missing a
primary point: the age of the oldest primary point newer than everything
the DR region holds (0 when it holds the newest). A resource with no point
yet counts from when its policy was applied. Each measure is ``ok`` up to
80% of the tier's RPO, ``at_risk`` above that, ``breached`` above the RPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reprieve.catalog.db import as_utc
from reprieve.catalog.models import PointRecord
from reprieve.catalog.points import vault_key
from reprieve.policy.model import Policy

AT_RISK = 0.8
ORDER = ("ok", "at_risk", "breached")


def state_of(measure_s: float | None, target_s: float) -> str:
    if measure_s is None or measure_s <= AT_RISK * target_s:
        return "ok"
    return "at_risk" if measure_s <= target_s else "breached"


def worst(*states: str) -> str:
    return max(states, key=ORDER.index)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z") if t else None


@dataclass(frozen=True)
class ResourceStatus:
    resource: str
    tenant: str
    tier: str
    kind: str
    rpo_target_s: float
    rto_target_s: float
    primary: list[str]
    dr: list[str]
    rpo_s: float
    last_backup: datetime | None
    dr_rpo_s: float | None
    last_copy: datetime | None
    replication_lag_s: float | None

    @property
    def backup_state(self) -> str:
        return state_of(self.rpo_s, self.rpo_target_s)

    @property
    def replication_state(self) -> str:
        return state_of(self.replication_lag_s, self.rpo_target_s)

    @property
    def state(self) -> str:
        return worst(self.backup_state, self.replication_state)

    def to_json(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return round(value, 1) if value is not None else None

        return {
            "resource": self.resource,
            "tenant": self.tenant,
            "tier": self.tier,
            "kind": self.kind,
            "rpo_target_s": self.rpo_target_s,
            "rto_target_s": self.rto_target_s,
            "rpo_s": rounded(self.rpo_s),
            "state": self.state,
            "backup_state": self.backup_state,
            "replication_state": self.replication_state,
            "last_backup": _iso(self.last_backup),
            "last_copy": _iso(self.last_copy),
            "dr_rpo_s": rounded(self.dr_rpo_s),
            "replication_lag_s": rounded(self.replication_lag_s),
            "primary_vaults": self.primary,
            "dr_vaults": self.dr,
        }


def vaults_of(policy: Policy, resource: str) -> tuple[list[str], list[str]]:
    primary: list[str] = []
    dr: list[str] = []
    for plan in policy.plans_for(resource):
        for rule in policy.plans[plan].rules:
            if rule.vault not in primary:
                primary.append(rule.vault)
            for copy in rule.copies:
                if copy.vault not in dr:
                    dr.append(copy.vault)
    return primary, [v for v in dr if v not in primary]


def _newest(
    session: Session, resource: str, keys: list[str]
) -> tuple[datetime | None, datetime | None]:
    """(newest point time, when the newest point was recorded) in these vaults."""
    if not keys:
        return None, None
    newest, recorded = session.execute(
        select(func.max(PointRecord.time), func.max(PointRecord.recorded_at)).where(
            PointRecord.resource == resource,
            PointRecord.vault.in_(keys),
            PointRecord.forgotten_at.is_(None),
        )
    ).one()
    return (as_utc(newest) if newest else None, as_utc(recorded) if recorded else None)


def replication_lag(
    session: Session,
    resource: str,
    source: list[str],
    target: list[str],
    since: datetime,
    now: datetime,
) -> tuple[float, float]:
    """(lag, DR RPO) in seconds of ``target`` vaults behind ``source`` vaults."""
    last_dr, _ = _newest(session, resource, target)
    query = select(func.min(PointRecord.time)).where(
        PointRecord.resource == resource,
        PointRecord.vault.in_(source),
        PointRecord.forgotten_at.is_(None),
    )
    if last_dr is not None:
        query = query.where(PointRecord.time > last_dr)
    waiting = session.scalar(query)
    lag = (now - as_utc(waiting)).total_seconds() if waiting else 0.0
    return lag, (now - (last_dr or since)).total_seconds()


def status(
    session: Session,
    policy: Policy,
    since: datetime,
    now: datetime,
    tenant: str | None = None,
) -> list[ResourceStatus]:
    """Every resource of the policy (of one tenant), by tenant then name."""
    rows: list[ResourceStatus] = []
    for name in sorted(policy.resources, key=lambda r: (policy.resources[r].tenant, r)):
        spec = policy.resources[name]
        if tenant is not None and spec.tenant != tenant:
            continue
        tier = policy.tier_of(spec)
        primary, dr = vaults_of(policy, name)
        primary_keys = [vault_key(policy.vaults[v].url) for v in primary]
        dr_keys = [vault_key(policy.vaults[v].url) for v in dr]
        last_backup, _ = _newest(session, name, primary_keys)
        _, last_copy = _newest(session, name, dr_keys)
        lag: float | None = None
        dr_rpo: float | None = None
        if dr:
            lag, dr_rpo = replication_lag(session, name, primary_keys, dr_keys, since, now)
        rows.append(
            ResourceStatus(
                resource=name,
                tenant=spec.tenant,
                tier=tier,
                kind=spec.kind.value,
                rpo_target_s=policy.tiers[tier].rpo.total_seconds(),
                rto_target_s=policy.tiers[tier].rto.total_seconds(),
                primary=primary,
                dr=dr,
                rpo_s=(now - (last_backup or since)).total_seconds(),
                last_backup=last_backup,
                dr_rpo_s=dr_rpo,
                last_copy=last_copy,
                replication_lag_s=lag,
            )
        )
    return rows
