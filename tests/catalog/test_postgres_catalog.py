"""The catalog on a real PostgreSQL server: migrations run, and the audit chain holds."""

from __future__ import annotations

from pg import Postgres

from reprieve.catalog import audit
from reprieve.catalog.db import open_catalog


def test_an_audit_event_recorded_on_postgresql_chains_and_verifies(postgres: Postgres) -> None:
    with open_catalog(postgres.create_database("audit_chain")) as catalog:
        recorded = audit.record(catalog, "test.event", "subject", {"k": 1})

        events = audit.newest(catalog)
        with catalog.session() as session:
            count, problems = audit.verify(session)

    assert [(e.seq, e.action, e.subject, e.details) for e in events] == [
        (1, "test.event", "subject", {"k": 1})
    ]
    assert events[0].hash == recorded.hash
    assert count == 1
    assert problems == []
