"""Drills in the catalog: the document, each resource's part, and the audit event.

A drill and its audit event land in one transaction, so the trail never
names a drill the catalog lacks. A report's digest is chained into the
trail when the report is written; ``drill report`` checks a report file
against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from reprieve.catalog import audit
from reprieve.catalog.db import Catalog, as_utc
from reprieve.catalog.models import AuditEvent, DrillRecord, DrillResource
from reprieve.drills.model import Drill
from reprieve.drills.report import document_digest
from reprieve.errors import DamageFound, NotFoundError, UsageError


def save(catalog: Catalog, drill: Drill) -> AuditEvent:
    """Record ``drill`` and its audit event together."""
    doc = drill.to_json()
    who = audit.actor()

    def work(session: Session) -> AuditEvent:
        session.add(
            DrillRecord(
                id=drill.id,
                kind=drill.kind.value,
                scenario=drill.scenario,
                subject=drill.subject,
                tenant=drill.tenant,
                tier=drill.tier,
                started_at=drill.started_at,
                finished_at=drill.finished_at,
                passed=drill.passed,
                rto_s=drill.rto_s,
                rpo_s=drill.rpo_s,
                rto_target_s=drill.rto_target_s,
                rpo_target_s=drill.rpo_target_s,
                document=doc,
            )
        )
        if not drill.resumed:  # a resumed run's time says nothing of a whole recovery
            for resource, kind in _parts(drill).items():
                part = next((r for r in drill.recovered if r.resource == resource), None)
                session.add(
                    DrillResource(
                        drill=drill.id,
                        resource=resource,
                        kind=kind,
                        started_at=drill.started_at,
                        passed=drill.resource_passed(resource),
                        rto_s=part.span_s if part else None,
                        rpo_s=part.rpo_s if part else None,
                        restore_s=part.restore_s if part else None,
                        bytes_read=part.bytes_read if part else None,
                    )
                )
        return audit.append(session, drill.kind.value, drill.subject, summary(doc), who)

    return audit.in_transaction(catalog, work)


def _parts(drill: Drill) -> dict[str, str]:
    """Each resource the drill covered, a failed one too (a drill from before
    ``resources`` was kept names only what it recovered)."""
    parts = dict(drill.resources)
    for part in drill.recovered:
        parts.setdefault(part.resource, part.kind)
    return parts


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What the audit event keeps of a drill: its outcome, and the digest of its
    whole document, so an edit of the catalog's copy is found (:func:`load`)."""
    keys = ("drill", "scenario", "passed", "rto_s", "rto_target_s", "rpo_s", "rpo_target_s")
    return {k: doc[k] for k in keys} | {
        "points": [r["point"] for r in doc["recovered"]],
        "document_sha256": document_digest(doc),
    }


def records(
    catalog: Catalog, subject: str | None = None, limit: int | None = None
) -> list[DrillRecord]:
    """Drills, newest first; of one resource (alone or in a tenant drill) when given."""
    query = select(DrillRecord).order_by(DrillRecord.started_at.desc())
    if subject is not None:
        parts = select(DrillResource.drill).where(DrillResource.resource == subject)
        query = query.where((DrillRecord.subject == subject) | DrillRecord.id.in_(parts))
    if limit is not None:
        query = query.limit(limit)
    with catalog.session() as session:
        return list(session.scalars(query))


def load(catalog: Catalog, prefix: str) -> Drill:
    """The drill whose id starts with ``prefix``, checked against its audit event."""
    query = select(DrillRecord).where(DrillRecord.id.startswith(prefix, autoescape=True))
    with catalog.session() as session:
        rows = list(session.scalars(query))
        if not rows:
            raise NotFoundError(f"no drill {prefix}; see `reprieve drill list`")
        if len(rows) > 1:
            raise UsageError(f"{prefix!r} names {len(rows)} drills; give more of the id")
        row = rows[0]
        event = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == row.kind, AuditEvent.subject == row.subject)
            .order_by(AuditEvent.seq.desc())
        )
        recorded = {
            e.details.get("document_sha256") for e in event if e.details.get("drill") == row.id
        }
    if document_digest(row.document) not in recorded:
        raise DamageFound(
            f"drill {row.id} in the catalog does not match the digest its audit event "
            "recorded: it was edited; `reprieve audit verify` checks the trail itself"
        )
    return Drill.from_json(row.document)


def note_report(
    catalog: Catalog, drill_id: str, digest: str, path: str, json_digest: str
) -> AuditEvent:
    """Chain the digests of the report (HTML and JSON) into the trail and keep
    the page's with the drill."""
    who = audit.actor()

    def work(session: Session) -> AuditEvent:
        session.execute(
            update(DrillRecord).where(DrillRecord.id == drill_id).values(report_digest=digest)
        )
        details = {"drill": drill_id, "sha256": digest, "file": path, "json_sha256": json_digest}
        return audit.append(session, "drill-report", drill_id, details, who)

    return audit.in_transaction(catalog, work)


def report_digests(catalog: Catalog, drill_id: str) -> set[str]:
    """The digest of every report of the drill the audit trail has recorded."""
    query = select(AuditEvent).where(
        AuditEvent.action == "drill-report", AuditEvent.subject == drill_id
    )
    with catalog.session() as session:
        events = list(session.scalars(query))
    return {str(e.details.get(k)) for e in events for k in ("sha256", "json_sha256")}


def last_per_resource(session: Session) -> dict[str, DrillResource]:
    """Each resource's newest drill part."""
    newest = (
        select(DrillResource.resource, func.max(DrillResource.started_at).label("at"))
        .group_by(DrillResource.resource)
        .subquery()
    )
    rows = session.scalars(
        select(DrillResource).join(
            newest,
            (DrillResource.resource == newest.c.resource)
            & (DrillResource.started_at == newest.c.at),
        )
    )
    return {row.resource: row for row in rows}


def history(session: Session, resource: str, limit: int = 10) -> list[DrillResource]:
    """The resource's newest drill parts, newest first."""
    return list(
        session.scalars(
            select(DrillResource)
            .where(DrillResource.resource == resource)
            .order_by(DrillResource.started_at.desc())
            .limit(limit)
        )
    )


def started(row: DrillRecord | DrillResource) -> datetime:
    return as_utc(row.started_at)
