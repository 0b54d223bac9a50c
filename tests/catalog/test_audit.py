"""The audit trail: events chain, and any edit, removal, or reordering is named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import ok, run_cli

from reprieve.catalog import audit
from reprieve.catalog.db import open_catalog


def three_events(path: Path) -> str:
    url = f"sqlite:///{path}"
    catalog = open_catalog(url)
    for n in range(1, 4):
        audit.record(catalog, "backup", f"point {n}", {"bytes": n * 100})
    catalog.close()
    return url


def broken_at(url: str) -> list[str]:
    catalog = open_catalog(url)
    try:
        with catalog.session() as session:
            _, problems = audit.verify(session)
    finally:
        catalog.close()
    return [str(p) for p in problems]


def test_an_untouched_chain_verifies(tmp_path: Path) -> None:
    url = three_events(tmp_path / "c.db")

    assert broken_at(url) == []
    catalog = open_catalog(url)
    with catalog.session() as session:
        count, _ = audit.verify(session)
    assert count == 3


@pytest.mark.parametrize(
    ("tamper", "first_problem"),
    [
        (
            "UPDATE audit_events SET details = '{\"bytes\": 999}' WHERE seq = 2",
            "audit event 2: was edited after it was recorded",
        ),
        (
            "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 1",
            "audit event 1: was edited after it was recorded",
        ),
        (
            "DELETE FROM audit_events WHERE seq = 2",
            "audit event 3: follows event 1: events are missing",
        ),
        # Swapping two events' places (their numbers) breaks both links.
        (
            "UPDATE audit_events SET seq = 100 WHERE seq = 2; "
            "UPDATE audit_events SET seq = 2 WHERE seq = 3; "
            "UPDATE audit_events SET seq = 3 WHERE seq = 100",
            "audit event 2: does not link to the event before it",
        ),
    ],
    ids=["edited-details", "edited-actor", "removed", "reordered"],
)
def test_tampering_is_found_and_named(tmp_path: Path, tamper: str, first_problem: str) -> None:
    path = tmp_path / "c.db"
    url = three_events(path)
    with sqlite3.connect(path) as db:
        db.executescript(tamper)

    assert broken_at(url)[0] == first_problem


def test_audit_verify_exits_3_naming_the_edited_policy_event(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("vaults:\n  v: {url: /srv/v}\n")
    ok("policy", "apply", policy)
    policy.write_text("vaults:\n  v: {url: /srv/other}\n")
    applied = ok("policy", "apply", policy, "--json").json()
    assert applied["changes"]["changed"] == ["vault v (url)"]
    events = ok("audit", "list", "--json").json()
    assert [e["action"] for e in events] == ["policy.apply", "policy.apply"]
    assert ok("audit", "verify").stdout.strip() == "audit trail intact: 2 event(s)"

    with sqlite3.connect(Path.home() / ".reprieve" / "catalog.db") as db:
        db.execute("UPDATE audit_events SET subject = 'policy version 9' WHERE seq = 2")
    result = run_cli("audit", "verify")

    assert result.code == 3
    assert result.stderr.strip() == (
        "reprieve: audit trail broken at event 2: was edited after it was recorded"
    )
