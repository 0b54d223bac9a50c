"""`reprieve catalog rebuild`: the catalog again, from a vault alone."""

from __future__ import annotations

import click

from reprieve.cli.common import catalog_option, emit, json_option, with_vault
from reprieve.vault.repository import Vault


@click.group("catalog")
def catalog_group() -> None:
    """The catalog database: points, jobs, policy versions, audit trail."""


@catalog_group.command()
@with_vault
@catalog_option
@json_option
def rebuild(vault: Vault, catalog_url: str | None, as_json: bool) -> None:
    """Recover points, resources, and audit history from the vault (run per vault)."""
    from reprieve.catalog.db import open_catalog
    from reprieve.catalog.rebuild import rebuild as run

    with open_catalog(catalog_url) as catalog:
        summary = run(catalog, vault)
    emit(
        as_json,
        summary,
        lambda: click.echo(
            f"catalog rebuilt from {summary['vault']}: {summary['points']} point(s) of "
            f"{len(summary['resources'])} resource(s), {summary['audit_recovered']} audit "
            f"record(s) recovered, {summary['forgotten']} marked forgotten"
        ),
    )
