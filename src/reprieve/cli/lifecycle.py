"""`reprieve lifecycle run`: move aging points to a cold vault, expire old ones."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click

from reprieve.cli.common import (
    emit,
    json_option,
    progress_for,
    read_secret,
    record_action,
    with_vault,
)
from reprieve.engine.lifecycle import (
    LifecyclePlan,
    LifecycleRules,
    plan_lifecycle,
    run_lifecycle,
)
from reprieve.policy.retention import parse_duration
from reprieve.vault.repository import Vault, backend_for


def _forgotten(plan: LifecyclePlan) -> dict[str, list[str]]:
    """The points a finished run forgot, by vault role: those moved to the cold
    vault and those expired, less any a hold or retention kept."""
    kept = {(role, point.id) for role, point, _ in plan.kept}
    hot = [p.id for p in plan.move if p.id in plan.moved and ("hot", p.id) not in kept]
    gone = {"hot": hot, "cold": []}
    for role, point in plan.delete:
        if (role, point.id) not in kept:
            gone[role].append(point.id)
    return gone


def _note(vault: Vault, cold: Vault | None, plan: LifecyclePlan, resource: str | None) -> None:
    """Record a finished run that changed something (see catalog.trail)."""
    forgot = _forgotten(plan)
    if not plan.moved and not any(forgot.values()):
        return
    roles = [("hot", vault)] + ([("cold", cold)] if cold is not None else [])
    details = {
        "location": vault.backend.location,
        "cold_location": cold.backend.location if cold is not None else None,
        "moved": len(plan.moved),
        "forgotten": {role: len(ids) for role, ids in forgot.items()},
        "kept": len(plan.kept),
    }
    made = [(cold, cold.load_point(c)) for c in plan.moved.values()] if cold is not None else []
    record_action(
        [v for _, v in roles],
        "lifecycle",
        resource or "points",
        details,
        made=made,
        forgot=[(v, forgot[role]) for role, v in roles],
    )


@click.group()
def lifecycle() -> None:
    """Cold storage and expiry of recovery points."""


@lifecycle.command("run")
@with_vault
@json_option
@click.option("--cold-vault", metavar="LOCATION", help="Where points older than --cold-after go.")
@click.option(
    "--cold-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cold vault password (default: REPRIEVE_COLD_PASSWORD, else the vault's).",
)
@click.option("--cold-key-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cold-after", metavar="DURATION", help="Move points older than this, e.g. 30d.")
@click.option("--delete-after", metavar="DURATION", help="Forget points older than this.")
@click.option("--resource", help="Only this resource's points.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option("--no-prune", is_flag=True, help="Forget only; leave space reclamation to prune.")
def run(
    vault: Vault,
    as_json: bool,
    cold_vault: str | None,
    cold_password_file: Path | None,
    cold_key_file: Path | None,
    cold_after: str | None,
    delete_after: str | None,
    resource: str | None,
    dry_run: bool,
    no_prune: bool,
) -> None:
    """Move points to the cold vault and forget expired ones, never below a
    point's retention or legal hold."""
    rules = LifecycleRules(
        cold_after=parse_duration(cold_after) if cold_after else None,
        delete_after=parse_duration(delete_after) if delete_after else None,
    )
    rules.check(cold_vault is not None)
    cold = None
    if cold_vault is not None:
        if cold_password_file or cold_key_file or "REPRIEVE_COLD_PASSWORD" in os.environ:
            secret = read_secret(
                cold_password_file, cold_key_file, "REPRIEVE_COLD_PASSWORD", "cold password"
            )
        else:
            secret = read_secret(None, None)
        cold = Vault.open(backend_for(cold_vault), secret)
    plan = plan_lifecycle(vault, cold, rules, datetime.now(UTC), resource)
    if not dry_run:
        run_lifecycle(vault, cold, plan, progress_for(as_json, "lifecycle"), prune=not no_prune)
        _note(vault, cold, plan, resource)
    doc = plan.to_json(dry_run)

    def human() -> None:
        verb = ("would move", "would forget") if dry_run else ("moved", "forgot")
        click.echo(
            f"lifecycle: {verb[0]} {len(plan.move)} point(s) to cold storage, "
            f"{verb[1]} {len(plan.delete)}, kept {len(plan.kept)}"
        )
        for point in plan.move:
            click.echo(f"  {verb[0]} {point.short_id} ({point.resource})")
        for role, point in plan.delete:
            click.echo(f"  {verb[1]} {point.short_id} in the {role} vault")
        for role, point, why in plan.kept:
            click.echo(f"  kept {point.short_id} in the {role} vault: {why}")

    emit(as_json, doc, human)
