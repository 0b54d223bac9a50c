"""`reprieve points`: list and inspect recovery points."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reprieve.cli.common import (
    emit,
    human_bytes,
    json_option,
    record_action,
    with_vault,
)
from reprieve.vault.immutability import holds, place_hold, release_hold
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.repository import Vault
from reprieve.vault.tree import NodeType


@click.group()
def points() -> None:
    """List and inspect recovery points."""


@points.command("list")
@with_vault
@json_option
@click.option("--resource", help="Only points of this resource.")
def list_points(
    vault: Vault,
    as_json: bool,
    resource: str | None,
) -> None:
    """List points, oldest first."""
    found = vault.points(resource)
    held = holds(vault)
    rows = [{**p.summary(), "hold": held[p.id].reason if p.id in held else None} for p in found]

    def human() -> None:
        table = Table("id", "resource", "kind", "time (UTC)", "tags", "size", "locked")
        for r in rows:
            tags = ",".join(f"{k}={v}" for k, v in sorted(r["tags"].items()))
            locked = (
                "hold" if r["hold"] else (f"until {r['retain_until']}" if r["retain_until"] else "")
            )
            table.add_row(
                r["id"][:12],
                r["resource"],
                r["kind"],
                r["time"],
                tags,
                human_bytes(r["bytes"]),
                locked,
            )
        Console().print(table)

    emit(as_json, rows, human)


def walk_entries(vault: Vault, tree: bytes, prefix: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for node in vault.read_tree(tree):
        path = os.path.join(prefix, os.fsdecode(node.name)) if prefix else os.fsdecode(node.name)
        out.append({"path": path, "type": str(node.type), "size": node.size, "mode": node.mode})
        if node.type is NodeType.DIR and node.subtree is not None:
            out += walk_entries(vault, node.subtree, path)
    return out


@points.command("show")
@click.argument("point_id", metavar="POINT")
@with_vault
@json_option
@click.option("--files", "with_files", is_flag=True, help="Also list every path in the point.")
def show(
    vault: Vault,
    point_id: str,
    as_json: bool,
    with_files: bool,
) -> None:
    """Show one point's manifest (and, with --files, its contents)."""
    point = vault.find_point(point_id)
    hold = holds(vault).get(point.id)
    doc: dict[str, Any] = {
        **point.summary(),
        "hold": {"reason": hold.reason, "time": hold.time, "by": hold.by} if hold else None,
        "parent": point.parent,
        "origin": point.origin,
        "stats": point.stats,
    }
    if with_files:
        doc["files"] = walk_entries(vault, point.tree)

    def human() -> None:
        for key in ("id", "resource", "kind", "time", "host", "paths", "tags", "parent", "origin"):
            click.echo(f"{key:9} {doc[key]}")
        for key, value in sorted(point.stats.items()):
            click.echo(f"{key:9} {value}")
        for entry in doc.get("files", []):
            click.echo(f"  {entry['type']:7} {entry['size']:>12} {entry['path']}")

    emit(as_json, doc, human)


@points.command("hold")
@click.argument("point_id", metavar="POINT")
@with_vault
@json_option
@click.option("--reason", required=True, help="Why, e.g. a case number; recorded with the hold.")
def hold(vault: Vault, point_id: str, as_json: bool, reason: str) -> None:
    """Place a legal hold: the point cannot be forgotten until released."""
    with VaultLock(vault.backend, LockKind.SHARED, "hold"):
        point = vault.find_point(point_id)
        placed = place_hold(vault, point, reason)
    record_action([vault], "hold", point.id, {"reason": placed.reason})
    doc = {"point": point.id, "reason": placed.reason, "time": placed.time, "by": placed.by}
    emit(as_json, doc, lambda: click.echo(f"legal hold on {point.short_id}: {reason}"))


@points.command("release")
@click.argument("point_id", metavar="POINT")
@with_vault
@json_option
def release(vault: Vault, point_id: str, as_json: bool) -> None:
    """Release a point's legal hold (retention still applies)."""
    with VaultLock(vault.backend, LockKind.SHARED, "release"):
        point = vault.find_point(point_id)
        released = release_hold(vault, point)
    record_action([vault], "release", point.id, {"reason": released.reason})
    doc = {"point": point.id, "released": True, "reason": released.reason}
    emit(as_json, doc, lambda: click.echo(f"released legal hold on {point.short_id}"))
