"""`reprieve restore`: bring a recovery point back."""

from __future__ import annotations

from pathlib import Path

import click

from reprieve.cli.common import (
    emit,
    human_bytes,
    json_option,
    progress_for,
    record_action,
    with_vault,
)
from reprieve.cli.lazy import LazyGroup
from reprieve.engine.restore import restore_files
from reprieve.vault.repository import Vault


class RestoreGroup(LazyGroup):
    """``restore postgres …`` restores a database; anything else (``restore POINT …``,
    as before databases came) is a files restore, also reachable as ``restore files``."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in self.list_commands(ctx):
            return super().resolve_command(ctx, args)
        if args and args[0] in ("-h", "--help"):
            click.echo(ctx.get_help())
            ctx.exit(0)
        return "files", self.commands["files"], args


@click.group(
    cls=RestoreGroup,
    lazy={"postgres": "reprieve.cli.postgres:restore_postgres"},
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
def restore() -> None:
    """Bring back a recovery point (files) or a database (postgres)."""


@restore.command("files")
@click.argument("point_id", metavar="POINT")
@with_vault
@json_option
@click.option(
    "--target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to restore into (must be empty unless --overwrite).",
)
@click.option("--include", "includes", multiple=True, metavar="PATH", help="Only this subtree.")
@click.option("--overwrite", is_flag=True, help="Replace what is already in the target.")
def restore_files_command(
    vault: Vault,
    point_id: str,
    as_json: bool,
    target: Path,
    includes: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Restore a point into a folder, with content and metadata."""
    point = vault.find_point(point_id)
    stats = restore_files(
        vault, point, target, includes, overwrite, progress_for(as_json, "restore")
    )
    doc = {
        "point": point.id,
        "target": str(target.absolute()),
        "files": stats.files,
        "dirs": stats.dirs,
        "bytes": stats.bytes,
    }
    record_action([vault], "restore", point.resource, {"point": point.id, "target": doc["target"]})
    emit(
        as_json,
        doc,
        lambda: click.echo(
            f"restored {stats.files} files ({human_bytes(stats.bytes)}) of point "
            f"{point.short_id} into {target}"
        ),
    )
