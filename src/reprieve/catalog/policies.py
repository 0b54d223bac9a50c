"""Policy versions in the catalog: apply (with the difference it makes), and the one in force."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reprieve.catalog import audit
from reprieve.catalog.db import Catalog, as_utc
from reprieve.catalog.models import PolicyVersion
from reprieve.policy.loader import parse_policy
from reprieve.policy.model import Policy

# Section of the policy document, and what one entry of it is called.
SECTIONS = {
    "vaults": "vault",
    "tiers": "tier",
    "compliance": "compliance class",
    "tenants": "tenant",
    "resources": "resource",
    "plans": "plan",
}


@dataclass
class PolicyDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        return (
            [f"+ {name}" for name in self.added]
            + [f"- {name}" for name in self.removed]
            + [f"~ {name}" for name in self.changed]
        )

    def to_json(self) -> dict[str, list[str]]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def document(policy: Policy) -> dict[str, Any]:
    dumped: dict[str, Any] = policy.model_dump(mode="json")
    return dumped


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> PolicyDiff:
    """Entries added, removed, and changed, as ``section name`` (changed also names keys)."""
    result = PolicyDiff()
    for section, label in SECTIONS.items():
        before = (old or {}).get(section, {})
        after = new.get(section, {})
        result.added += [f"{label} {name}" for name in sorted(after.keys() - before.keys())]
        result.removed += [f"{label} {name}" for name in sorted(before.keys() - after.keys())]
        for name in sorted(before.keys() & after.keys()):
            was, now = before[name], after[name]
            if was != now:
                keys = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
                result.changed.append(f"{label} {name} ({', '.join(keys)})")
    return result


@dataclass(frozen=True)
class Applied:
    version: int
    changes: PolicyDiff
    unchanged: bool


def _newest(session: Session) -> PolicyVersion | None:
    return session.scalars(select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(1)).first()


def newest_version(catalog: Catalog) -> tuple[int, datetime] | None:
    """(id, applied at) of the policy in force, without parsing it."""
    with catalog.session() as session:
        found = session.execute(
            select(PolicyVersion.id, PolicyVersion.applied_at)
            .order_by(PolicyVersion.id.desc())
            .limit(1)
        ).first()
    return (found[0], as_utc(found[1])) if found else None


def current(catalog: Catalog) -> tuple[PolicyVersion, Policy] | None:
    """The policy in force, parsed again from the text that was applied."""
    with catalog.session() as session:
        row = _newest(session)
    return (row, parse_policy(row.text, f"catalog policy version {row.id}")) if row else None


def apply(
    catalog: Catalog, policy: Policy, text: str, source: str, at: datetime | None = None
) -> Applied:
    """Store ``policy`` as the one in force unless it is already; the new
    version and its audit event are one transaction."""
    new = document(policy)
    digest = hashlib.sha256(text.encode()).hexdigest()
    who = audit.actor()

    def store(session: Session) -> Applied:
        before = _newest(session)
        changes = diff(before.document if before else None, new)
        if before is not None and before.digest == digest:
            return Applied(before.id, changes, unchanged=True)
        row = PolicyVersion(
            applied_at=at or datetime.now(UTC),
            applied_by=who,
            digest=digest,
            source=source[:1000],
            text=text,
            document=new,
        )
        session.add(row)
        session.flush()
        details = {"digest": digest, "source": source, **changes.to_json()}
        audit.append(session, "policy.apply", f"policy version {row.id}", details, who)
        return Applied(row.id, changes, unchanged=False)

    return audit.in_transaction(catalog, store)
