"""`reprieve audit`: the audit trail, and proof that nobody edited it.

The catalog (SQLAlchemy) is imported inside the commands, so other commands
start without it.
"""

from __future__ import annotations

import click

from reprieve.cli.common import catalog_option, emit, json_option
from reprieve.errors import DamageFound


@click.group()
def audit() -> None:
    """Every state-changing action, chained by hashes."""


@audit.command("list")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N events.")
@catalog_option
@json_option
def list_events(limit: int | None, catalog_url: str | None, as_json: bool) -> None:
    """Events oldest first."""
    from reprieve.catalog import audit as trail
    from reprieve.catalog.db import as_utc, open_catalog

    with open_catalog(catalog_url) as catalog:
        events = trail.newest(catalog, limit)
    rows = [
        {
            "seq": e.seq,
            "at": as_utc(e.at).isoformat(),
            "actor": e.actor,
            "action": e.action,
            "subject": e.subject,
            "details": e.details,
            "hash": e.hash,
        }
        for e in events
    ]

    def human() -> None:
        for e in events:
            click.echo(f"{e.seq:>6}  {e.at:%Y-%m-%d %H:%M:%S}  {e.actor}  {e.action}  {e.subject}")

    emit(as_json, rows, human)


@audit.command()
@catalog_option
@json_option
def verify(catalog_url: str | None, as_json: bool) -> None:
    """Check the chain; exit 3 naming the first event edited, removed, or reordered."""
    from reprieve.catalog import audit as trail
    from reprieve.catalog.db import open_catalog

    with open_catalog(catalog_url) as catalog, catalog.session() as session:
        count, problems = trail.verify(session)
    if problems:
        if as_json:
            emit(True, {"events": count, "problems": [str(p) for p in problems]}, lambda: None)
        raise DamageFound(
            f"audit trail broken at event {problems[0].seq}: {problems[0].problem}"
            + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
        )
    emit(
        as_json,
        {"events": count, "problems": []},
        lambda: click.echo(f"audit trail intact: {count} event(s)"),
    )
