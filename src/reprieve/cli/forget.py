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
    record_action,
    with_vault,
)
from reprieve.errors import NotFoundError, RefusedError, UsageError
from reprieve.policy.retention import RetentionRules, apply_retention, parse_duration
from reprieve.vault.immutability import audit, blocker, check_bypass, holds
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
    line = (
        f"prune {verb} {human_bytes(doc['bytes_freed'])}: {doc['packs_deleted']} packs deleted, "
        f"{doc['packs_repacked']} repacked ({doc['blobs_repacked']} blobs)"
    )
    if doc["packs_locked"]:
        line += f"; {doc['packs_locked']} packs kept, still locked until {doc['locked_until']}"
    return line


def bypass_option(func: Any) -> Any:
    return click.option(
        "--bypass-governance",
        is_flag=True,
        help="Governance-mode vaults: delete before retention ends (recorded in the audit trail).",
    )(func)


def _audit_bypass(vault: Vault, command: str, detail: dict[str, Any]) -> None:
    record = audit(vault, "bypass-governance", command=command, **detail)
    click.echo(f"audit: governance retention bypassed by {record['by']} for {command}", err=True)


@click.command()
@click.argument("point_ids", nargs=-1, metavar="[POINT]...")
@with_vault
@json_option
@force_unlock_option
@bypass_option
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
    point_ids: tuple[str, ...],
    vault: Vault,
    as_json: bool,
    force_unlock: bool,
    bypass_governance: bool,
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
    """Forget the given points, or those the --keep rules do not keep (per resource).

    Points still retained on a locked vault, or on legal hold, are never
    forgotten: the rules keep them, and naming one exits 7.
    """

    rules = RetentionRules(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=parse_duration(keep_within) if keep_within else None,
    )
    if point_ids and not rules.is_empty():
        raise UsageError("give point ids or --keep-* rules, not both")
    if not point_ids and rules.is_empty():
        apply_retention([], rules, datetime.now(UTC))  # raises the usage error
    now = datetime.now(UTC)
    with VaultLock(vault.backend, LockKind.EXCLUSIVE, "forget", force_unlock):
        if bypass_governance:
            check_bypass(vault)
        held = holds(vault, strict=True)
        if point_ids:
            results = [_forget_named(vault, point_ids, held, now, bypass_governance, dry_run)]
        else:
            results = _forget_by_rules(
                vault, resource, rules, held, now, bypass_governance, dry_run
            )
        doc: dict[str, Any] = {"dry_run": dry_run, "resources": results}
        removed = [p for r in results for p in r["remove"]]
        if bypass_governance and not dry_run:
            _audit_bypass(vault, "forget", {"points": removed})
        if removed and not dry_run:
            record_action(
                [vault],
                "forget",
                resource or "points",
                {"removed": removed, "dry_run": False, "bypass_governance": bypass_governance},
                forgot=[(vault, removed)],
            )
        if and_prune:
            # A dry run has forgotten nothing yet: plan as if it had.
            forgotten = set(removed) if dry_run else set()
            doc["prune"] = _prune(vault, dry_run, as_json, forgotten)

    def human() -> None:
        verb = "would forget" if dry_run else "forgot"
        for r in results:
            click.echo(f"{r['resource']}: keep {len(r['keep'])}, {verb} {len(r['remove'])}")
            for point_id in r["remove"]:
                click.echo(f"  {verb} {point_id[:12]}")
            for kept in r["keep"]:
                locked = [x for x in kept["reasons"] if x.startswith(("retained", "on legal"))]
                if locked:
                    click.echo(f"  kept {kept['id'][:12]}: {locked[0]}")
        if "prune" in doc:
            click.echo(_prune_line(doc["prune"]))

    emit(as_json, doc, human)


@click.command()
@with_vault
@json_option
@force_unlock_option
@bypass_option
@click.option("--dry-run", is_flag=True, help="Show what would be removed and repacked.")
def prune(
    vault: Vault,
    as_json: bool,
    force_unlock: bool,
    bypass_governance: bool,
    dry_run: bool,
) -> None:
    """Remove data no point references; repack half-empty packs.

    Data still locked on a locked vault is kept, and the output says until when.
    """
    with VaultLock(vault.backend, LockKind.EXCLUSIVE, "prune", force_unlock):
        if bypass_governance:
            check_bypass(vault)
        doc = _prune(vault, dry_run, as_json)
        if bypass_governance and not dry_run:
            _audit_bypass(vault, "prune", {"packs_deleted": doc["packs_deleted"]})
    emit(as_json, doc, lambda: click.echo(_prune_line(doc)))


def _forget_named(
    vault: Vault,
    point_ids: tuple[str, ...],
    held: dict[str, Any],
    now: datetime,
    bypass: bool,
    dry_run: bool,
) -> dict[str, Any]:
    """Forget exactly these points; refuse them all if one is locked or held."""
    points = list({p.id: p for p in map(vault.find_point, point_ids)}.values())
    for point in points:
        reason = blocker(vault, point, held, now, bypass)
        if reason is not None:
            raise RefusedError(f"refusing to forget point {point.short_id}: {reason}")
    if not dry_run:
        for point in points:
            vault.forget_point(point.id)
    return {"resource": "(named points)", "keep": [], "remove": [p.id for p in points]}


def _forget_by_rules(
    vault: Vault,
    resource: str | None,
    rules: RetentionRules,
    held: dict[str, Any],
    now: datetime,
    bypass: bool,
    dry_run: bool,
) -> list[dict[str, Any]]:
    groups: dict[str, list[Point]] = {}
    for point in vault.points(resource):
        groups.setdefault(point.resource, []).append(point)
    if resource is not None and not groups:
        raise NotFoundError(f"resource {resource!r} has no points in this vault")
    results: list[dict[str, Any]] = []
    for name, group in sorted(groups.items()):
        decision = apply_retention(group, rules, now)
        keep = [(p, decision.reasons[p.id]) for p in decision.keep]
        remove = []
        for point in decision.remove:
            reason = blocker(vault, point, held, now, bypass)
            if reason is None:
                remove.append(point)
            else:
                keep.append((point, [reason]))
        if not dry_run:
            for point in remove:
                vault.forget_point(point.id)
        keep.sort(key=lambda kept: (kept[0].time, kept[0].id), reverse=True)  # newest first
        results.append(
            {
                "resource": name,
                "keep": [{"id": p.id, "reasons": reasons} for p, reasons in keep],
                "remove": [p.id for p in remove],
            }
        )
    return results
