"""Rebuilding the catalog from a vault alone.

The vault is the source of truth: a DR region whose catalog was lost (or
never existed) gets back every point the vault holds, which resources they
belong to, and the audit history the vault recorded. Points the catalog
lists for this vault but the vault no longer holds are marked forgotten.
Audit records are appended to the chain (a chain cannot be spliced into)
carrying where and when they were first recorded; running rebuild again
adds nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reprieve.catalog import audit, points
from reprieve.catalog.db import Catalog
from reprieve.catalog.models import AuditEvent, PointRecord
from reprieve.vault.immutability import audit_records
from reprieve.vault.repository import Vault


def _seen(session: Session) -> set[str]:
    """Every audit record the chain already holds, by hash or by what it recorded."""
    seen: set[str] = set()
    for event_hash, details in session.execute(select(AuditEvent.hash, AuditEvent.details)):
        seen.add(event_hash)
        recovered = details.get("recovered") if isinstance(details, dict) else None
        if isinstance(recovered, dict):
            seen.add(str(recovered.get("hash") or recovered.get("key")))
    return seen


def _key(record: dict[str, Any]) -> str:
    return str(
        record.get("hash") or f"{record.get('time')}|{record['action']}|{record.get('subject')}"
    )


def rebuild(catalog: Catalog, vault: Vault) -> dict[str, Any]:
    location = vault.backend.location
    held = vault.points()
    records = audit_records(vault)
    now = datetime.now(UTC)
    who = audit.actor()

    def work(session: Session) -> dict[str, Any]:
        listed = set(
            session.scalars(
                select(PointRecord.point).where(
                    PointRecord.vault_id == vault.config.id, PointRecord.forgotten_at.is_(None)
                )
            )
        )
        for point in held:
            points.record(session, location, vault.config.id, point, now)
        gone = listed - {p.id for p in held}
        points.forgotten(session, vault.config.id, gone, now)
        seen = _seen(session)
        recovered = 0
        for record in sorted(records, key=lambda r: (str(r.get("time")), r.get("seq") or 0)):
            if _key(record) in seen:
                continue
            details = dict(record.get("details") or {})
            extra = {k: v for k, v in record.items() if k not in _FIELDS}
            details.update(extra)
            details["recovered"] = {
                "from": location,
                "time": record.get("time"),
                "seq": record.get("seq"),
                "hash": record.get("hash"),
                "key": _key(record),
            }
            actor = str(record.get("actor") or record.get("by") or "unknown")
            audit.append(
                session, str(record["action"]), str(record.get("subject", "")), details, actor
            )
            seen.add(_key(record))
            recovered += 1
        summary = {
            "vault": location,
            "points": len(held),
            "resources": sorted({p.resource for p in held}),
            "forgotten": len(gone),
            "audit_recovered": recovered,
        }
        audit.append(session, "catalog.rebuild", location, summary, who)
        return summary

    return audit.in_transaction(catalog, work)


_FIELDS = {"time", "by", "action", "subject", "details", "seq", "hash", "actor"}
