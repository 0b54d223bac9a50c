"""The audit trail: an append-only hash chain of state-changing actions.

Each event's hash covers its sequence number, time, actor, action, subject,
details, and the previous event's hash, so editing, removing, or reordering
any event breaks the chain from that event on, and ``verify`` names it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reprieve.catalog.db import Catalog, as_utc
from reprieve.catalog.models import AuditEvent
from reprieve.errors import StorageError

GENESIS = "0" * 64
T = TypeVar("T")
APPEND_ATTEMPTS = 5


def actor() -> str:
    """Who acts: ``REPRIEVE_ACTOR`` (set by a service), else user@host."""
    given = os.environ.get("REPRIEVE_ACTOR")
    if given:
        return given
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def event_hash(
    seq: int,
    at: datetime,
    who: str,
    action: str,
    subject: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "at": as_utc(at).isoformat(),
        "actor": who,
        "action": action,
        "subject": subject,
        "details": details,
        "prev": prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def append(
    session: Session, action: str, subject: str, details: dict[str, Any], who: str
) -> AuditEvent:
    """Chain one event onto the newest, inside the caller's transaction."""
    last = session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1).with_for_update()
    ).first()
    seq = last.seq + 1 if last else 1
    prev = last.hash if last else GENESIS
    at = datetime.now(UTC)
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=who,
        action=action,
        subject=subject,
        details=details,
        prev_hash=prev,
        hash=event_hash(seq, at, who, action, subject, details, prev),
    )
    session.add(event)
    session.flush()
    return event


def in_transaction(catalog: Catalog, work: Callable[[Session], T]) -> T:
    """Run ``work`` in one transaction, again when a racing writer took the
    same audit sequence number first (the change and its event land together)."""
    for attempt in range(APPEND_ATTEMPTS):
        try:
            with catalog.session() as session:
                return work(session)
        except StorageError as exc:
            if not isinstance(exc.__cause__, IntegrityError) or attempt + 1 == APPEND_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def record(
    catalog: Catalog, action: str, subject: str, details: dict[str, Any] | None = None
) -> AuditEvent:
    """Append one event in its own transaction."""
    who = actor()
    return in_transaction(catalog, lambda s: append(s, action, subject, details or {}, who))


def newest(catalog: Catalog, limit: int | None = None) -> list[AuditEvent]:
    """The newest ``limit`` events (all when None), oldest first."""
    query = select(AuditEvent).order_by(AuditEvent.seq.desc())
    if limit is not None:
        query = query.limit(limit)
    with catalog.session() as session:
        return list(reversed(session.scalars(query).all()))


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit event {self.seq}: {self.problem}"


def verify(session: Session) -> tuple[int, list[ChainProblem]]:
    """(events checked, problems) walking the chain from the first event."""
    problems: list[ChainProblem] = []
    prev = GENESIS
    expected_seq = 1
    count = 0
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq)):
        count += 1
        if event.seq != expected_seq:
            problems.append(
                ChainProblem(event.seq, f"follows event {expected_seq - 1}: events are missing")
            )
        if event.prev_hash != prev:
            problems.append(ChainProblem(event.seq, "does not link to the event before it"))
        again = event_hash(
            event.seq,
            event.at,
            event.actor,
            event.action,
            event.subject,
            event.details,
            event.prev_hash,
        )
        if again != event.hash:
            problems.append(ChainProblem(event.seq, "was edited after it was recorded"))
        prev = event.hash
        expected_seq = event.seq + 1
    return count, problems
