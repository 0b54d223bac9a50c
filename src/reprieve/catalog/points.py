"""The catalog's record of recovery points, kept as backups and copies run.

``status`` reads the newest point of each resource per vault from here, so
it answers without opening vaults. The vaults remain the truth: ``catalog
rebuild`` writes these rows again from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from reprieve.catalog.db import as_utc
from reprieve.catalog.models import PointRecord
from reprieve.vault.points import Point


def vault_key(location: str) -> str:
    """One spelling per vault location: no options, no trailing slash, absolute."""
    if location.startswith("s3://"):
        parts = urlsplit(location)
        return f"s3://{parts.netloc}{parts.path.rstrip('/')}"
    return str(Path(location).absolute())


def record(session: Session, location: str, vault_id: str, point: Point, now: datetime) -> None:
    """Add ``point`` (or bring its row up to date)."""
    row = session.scalars(
        select(PointRecord).where(PointRecord.vault_id == vault_id, PointRecord.point == point.id)
    ).first()
    if row is None:
        row = PointRecord(vault_id=vault_id, point=point.id, recorded_at=now)
        session.add(row)
    row.vault = vault_key(location)
    row.resource = point.resource
    row.kind = point.kind
    row.time = point.time
    row.origin = point.origin
    row.tags = dict(point.tags)
    row.bytes = int(point.stats.get("bytes", 0))
    row.retain_until = point.retain_until
    row.forgotten_at = None
    session.flush()


def forgotten(session: Session, vault_id: str, point_ids: Iterable[str], now: datetime) -> None:
    ids = list(point_ids)
    if ids:
        session.execute(
            update(PointRecord)
            .where(PointRecord.vault_id == vault_id, PointRecord.point.in_(ids))
            .values(forgotten_at=now)
        )


def newest(session: Session, vaults: Iterable[str]) -> dict[tuple[str, str], datetime]:
    """(resource, vault key) → time of its newest point still held, for these vaults."""
    keys = [vault_key(v) for v in vaults]
    rows = session.execute(
        select(PointRecord.resource, PointRecord.vault, func.max(PointRecord.time))
        .where(PointRecord.vault.in_(keys), PointRecord.forgotten_at.is_(None))
        .group_by(PointRecord.resource, PointRecord.vault)
    )
    return {(resource, vault): as_utc(t) for resource, vault, t in rows}


def held(session: Session, vault: str, resource: str) -> list[PointRecord]:
    """The points of ``resource`` in ``vault`` not forgotten, oldest first."""
    return list(
        session.scalars(
            select(PointRecord)
            .where(
                PointRecord.vault == vault_key(vault),
                PointRecord.resource == resource,
                PointRecord.forgotten_at.is_(None),
            )
            .order_by(PointRecord.time)
        )
    )
