"""`reprieve forget` and `reprieve prune`: retention and space reclamation."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import click

from reprieve.cli.common import (
    emit,
    force_unlock_option,
    human_bytes,
    json_option,
    progress_for,
    with_vault,
)
from reprieve.errors import NotFoundError
from reprieve.policy.retention import RetentionRules, apply_retention, parse_duration
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.points import Point
from reprieve.vault.prune import plan_prune, run_prune
from reprieve.vault.repository import Vault


def _prune(
    vault: Vault, dry_run: bool, as_json: bool, forgetting: Collection[str] = ()
) -> dict[str, Any]:
    plan = plan_prune(vault, forgetting)
    if not dry_run:
        run_prune(vault, plan, progress_for(as_json, "prune"))
    return {**plan.to_json(), "dry_run": dry_run}


def _prune_line(doc: dict[str, Any]) -> str:
    verb = "would free" if doc["dry_run"] else "freed"
    return (
        f"prune {verb} {human_bytes(doc['bytes_freed'])}: {doc['packs_deleted']} packs deleted, "
        f"{doc['packs_repacked']} repacked ({doc['blobs_repacked']} blobs)"
    )


@click.command()
@with_vault
@json_option
@force_unlock_option
@click.option("--resource", help="Only this resource (default: each resource on its own).")
@click.option("--keep-last", type=click.IntRange(0), default=0)
@click.option("--keep-hourly", type=click.IntRange(0), default=0)
@click.option("--keep-daily", type=click.IntRange(0), default=0)
@click.option("--keep-weekly", type=click.IntRange(0), default=0)
@click.option("--keep-monthly", type=click.IntRange(0), default=0)
@click.option("--keep-yearly", type=click.IntRange(0), default=0)
@click.option("--keep-within", metavar="DURATION", help="Keep everything newer, e.g. 35d.")
@click.option("--dry-run", is_flag=True, help="Show what would be forgotten.")
@click.option("--prune", "and_prune", is_flag=True, help="Prune afterwards.")
def forget(
    vault: Vault,
    as_json: bool,
    force_unlock: bool,
    resource: str | None,
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_within: str | None,
    dry_run: bool,
    and_prune: bool,
) -> None:
    """Forget points that the retention rules do not keep (per resource)."""
    rules = RetentionRules(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=parse_duration(keep_within) if keep_within else None,
    )
    if rules.is_empty():
        apply_retention([], rules, datetime.now(UTC))  # raises the usage error
    now = datetime.now(UTC)
    with VaultLock(vault.backend, LockKind.EXCLUSIVE, "forget", force_unlock):
        groups: dict[str, list[Point]] = {}
        for point in vault.points(resource):
            groups.setdefault(point.resource, []).append(point)
        if resource is not None and not groups:
            raise NotFoundError(f"resource {resource!r} has no points in this vault")
        results: list[dict[str, Any]] = []
        for name, group in sorted(groups.items()):
            decision = apply_retention(group, rules, now)
            if not dry_run:
                for point in decision.remove:
                    vault.forget_point(point.id)
            results.append(
                {
                    "resource": name,
                    "keep": [
                        {"id": p.id, "reasons": decision.reasons[p.id]} for p in decision.keep
                    ],
                    "remove": [p.id for p in decision.remove],
                }
            )
        doc: dict[str, Any] = {"dry_run": dry_run, "resources": results}
        if and_prune:
            # A dry run has forgotten nothing yet: plan as if it had.
            forgotten = {p for r in results for p in r["remove"]} if dry_run else set()
            doc["prune"] = _prune(vault, dry_run, as_json, forgotten)

    def human() -> None:
        verb = "would forget" if dry_run else "forgot"
        for r in results:
            click.echo(f"{r['resource']}: keep {len(r['keep'])}, {verb} {len(r['remove'])}")
            for point_id in r["remove"]:
                click.echo(f"  {verb} {point_id[:12]}")
        if "prune" in doc:
            click.echo(_prune_line(doc["prune"]))

    emit(as_json, doc, human)


@click.command()
@with_vault
@json_option
@force_unlock_option
@click.option("--dry-run", is_flag=True, help="Show what would be removed and repacked.")
def prune(
    vault: Vault,
    as_json: bool,
    force_unlock: bool,
    dry_run: bool,
) -> None:
    """Remove data no point references; repack half-empty packs."""
    with VaultLock(vault.backend, LockKind.EXCLUSIVE, "prune", force_unlock):
        doc = _prune(vault, dry_run, as_json)
    emit(as_json, doc, lambda: click.echo(_prune_line(doc)))
