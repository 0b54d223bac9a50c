"""Recording a state-changing action everywhere it must be found again.

An action goes into the catalog's hash chain and, with the chain's sequence
number and hash, into the audit folder of every vault it touched, so a
catalog rebuilt from the vaults alone recovers its history. A catalog that
cannot be reached does not stop the action: the vaults still get the
record, and the caller is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from reprieve.catalog import audit, points
from reprieve.catalog.db import Catalog, open_catalog
from reprieve.catalog.models import AuditEvent
from reprieve.errors import ReprieveError
from reprieve.vault.immutability import audit as vault_audit
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault


def note(
    catalog: Catalog | None,
    vaults: Sequence[Vault],
    action: str,
    subject: str,
    details: dict[str, Any],
    made: Sequence[tuple[Vault, Point]] = (),
    forgot: Sequence[tuple[Vault, Sequence[str]]] = (),
) -> str | None:
    """Record ``action`` (and the points it made or forgot) in ``catalog``, or
    when None in the one the command line names (REPRIEVE_CATALOG_URL or the
    default); returns a warning when the catalog or a vault could not take it."""
    problems = []
    chained: dict[str, Any] = {"actor": audit.actor()}

    def work(session: Session) -> AuditEvent:
        now = datetime.now(UTC)
        for vault, point in made:
            points.record(session, vault.backend.location, vault.config.id, point, now)
        for vault, ids in forgot:
            points.forgotten(session, vault.config.id, ids, now)
        return audit.append(session, action, subject, details, chained["actor"])

    try:
        if catalog is None:
            with open_catalog() as opened:
                event = audit.in_transaction(opened, work)
        else:
            event = audit.in_transaction(catalog, work)
        chained.update(seq=event.seq, hash=event.hash)
    except Exception as exc:  # the action is done: a catalog fault must not hide that
        problems.append(f"not recorded in the catalog: {_brief(exc)}")
    for vault in vaults:
        try:
            vault_audit(vault, action, subject=subject, details=details, **chained)
        except ReprieveError as exc:  # read-only credentials during a restore, say
            problems.append(f"not recorded in the vault at {vault.backend.location}: {exc}")
    return "; ".join(problems) or None


def _brief(exc: Exception) -> str:
    if isinstance(exc, ReprieveError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
