"""`reprieve backup`: take a recovery point of a resource."""

from __future__ import annotations

import click

from reprieve.cli.common import (
    emit,
    force_unlock_option,
    human_bytes,
    json_option,
    progress_for,
    record_action,
    with_vault_recording,
)
from reprieve.cli.lazy import LazyGroup
from reprieve.engine.backup import backup_files
from reprieve.errors import ReprieveError, UsageError
from reprieve.policy.retention import parse_duration
from reprieve.vault.repository import Vault


def parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise UsageError(f"tag {tag!r} is not KEY=VALUE")
        parsed[key] = value
    return parsed


@click.group(cls=LazyGroup, lazy={"postgres": "reprieve.cli.postgres:backup_postgres"})
def backup() -> None:
    """Take recovery points."""


@backup.command()
@click.argument("paths", nargs=-1, required=True)
@with_vault_recording
@json_option
@force_unlock_option
@click.option("--resource", required=True, help="Name of the protected resource.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag the point.")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN", help="Skip matches.")
@click.option(
    "--retain",
    metavar="DURATION",
    help="Lock the point for this long, e.g. 35d (locked vaults; default: their minimum).",
)
def files(
    vault: Vault,
    paths: tuple[str, ...],
    as_json: bool,
    force_unlock: bool,
    resource: str,
    tags: tuple[str, ...],
    excludes: tuple[str, ...],
    retain: str | None,
) -> None:
    """Back up files and folders; unchanged files are not read again."""
    tag_map = parse_tags(tags)
    span = parse_duration(retain) if retain else None
    progress = progress_for(as_json, f"backup {resource}")
    progress.start(f"backup {resource}")
    try:
        result = backup_files(
            vault, paths, resource, tag_map, excludes, progress, force_unlock, span
        )
    finally:
        progress.finish()
    doc = result.summary()
    record_action(
        [vault],
        "backup",
        resource,
        {
            "point": result.point.id,
            "location": vault.backend.location,
            "bytes_added": doc["bytes_added"],
            "files": result.stats.files,
        },
        made=[(vault, result.point)],
    )

    def human() -> None:
        click.echo(
            f"point {result.point.short_id} of {resource}: {result.stats.files} files, "
            f"{human_bytes(result.stats.bytes)} ({human_bytes(result.stats.bytes_read)} read, "
            f"{human_bytes(int(doc['bytes_added']))} added) in {result.duration_s:.1f}s"  # type: ignore[call-overload]
        )

    emit(as_json, doc, human)
    if result.stats.errors:
        raise ReprieveError(
            f"point {result.point.short_id} saved, but {len(result.stats.errors)} item(s) "
            f"could not be read (first: {result.stats.errors[0]})"
        )
