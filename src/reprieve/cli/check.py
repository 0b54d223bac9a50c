"""`reprieve check`: verify a vault, optionally reading every byte."""

from __future__ import annotations

import click

from reprieve.cli.common import (
    emit,
    json_option,
    progress_for,
    with_vault,
)
from reprieve.errors import DamageFound
from reprieve.sources.pg_inspect import check_databases
from reprieve.vault.check import check_vault
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.repository import Vault


@click.command()
@with_vault
@json_option
@click.option("--read-data", is_flag=True, help="Decrypt and re-hash every blob.")
def check(
    vault: Vault,
    as_json: bool,
    read_data: bool,
) -> None:
    """Verify structure, index and trees; exit 3 when damage is found."""
    # Shared: backups may go on, but no prune may delete what is being read.
    with VaultLock(vault.backend, LockKind.SHARED, "check"):
        report = check_vault(vault, read_data, progress_for(as_json, "check"))
        databases, problems = check_databases(vault, read_data)
    report.errors += problems
    doc = {**report.to_json(), "databases": [d.to_json() for d in databases]}

    def human() -> None:
        for line in report.warnings:
            click.echo(f"warning: {line}", err=True)
        for line in report.errors:
            click.echo(f"damage: {line}")
        for point, paths in sorted(report.damaged.items()):
            for path in paths:
                click.echo(f"  point {point[:12]}: {path}")
        for db in databases:
            window = db.to_json()["window"]
            click.echo(
                f"{db.resource}: {db.bases} base backup(s), WAL {db.first} to {db.last}; "
                f"restorable from {window['earliest'] or '-'} to {window['latest'] or '-'}"
            )
        state = "no damage found" if report.ok else f"{len(report.errors)} problem(s) found"
        click.echo(
            f"checked {report.points} points, {report.packs} packs"
            f"{f', {report.blobs_read} blobs read' if read_data else ''}: {state}"
        )

    emit(as_json, doc, human)
    if not report.ok:
        raise DamageFound(f"check found {len(report.errors)} problem(s), first: {report.errors[0]}")
