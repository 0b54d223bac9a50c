"""`reprieve policy`: validate, apply, and show the policy file.

pydantic, PyYAML and SQLAlchemy are imported inside the commands: every
other command starts without reading them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reprieve.cli.common import catalog_option, emit, json_option
from reprieve.errors import NotFoundError

if TYPE_CHECKING:
    from reprieve.policy.model import Policy

POLICY_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group()
def policy() -> None:
    """Tiers, plans, tenants and resources: the policy the scheduler runs."""


def _summary(p: Policy) -> str:
    rules = sum(len(plan.rules) for plan in p.plans.values())
    return (
        f"{len(p.vaults)} vault(s), {len(p.tiers)} tier(s), {len(p.tenants)} tenant(s), "
        f"{len(p.resources)} resource(s), {len(p.plans)} plan(s) with {rules} rule(s)"
    )


@policy.command()
@click.argument("path", type=POLICY_FILE)
@json_option
def validate(path: Path, as_json: bool) -> None:
    """Check a policy file; every problem is printed with its line (exit 2)."""
    from reprieve.catalog import policies
    from reprieve.policy.loader import load_policy

    loaded = load_policy(path)
    emit(
        as_json,
        {"valid": True, "policy": policies.document(loaded.policy)},
        lambda: click.echo(f"{path}: valid; {_summary(loaded.policy)}"),
    )


@policy.command()
@click.argument("path", type=POLICY_FILE)
@catalog_option
@json_option
def apply(path: Path, catalog_url: str | None, as_json: bool) -> None:
    """Validate a policy file and make it the one in force; shows what changed."""
    from reprieve.catalog import policies
    from reprieve.catalog.db import open_catalog
    from reprieve.policy.loader import load_policy

    loaded = load_policy(path)
    with open_catalog(catalog_url) as catalog:
        applied = policies.apply(catalog, loaded.policy, loaded.text, str(path))

    def human() -> None:
        if applied.unchanged:
            click.echo(f"policy version {applied.version} is already in force; nothing changed")
            return
        click.echo(f"policy version {applied.version} applied: {_summary(loaded.policy)}")
        for line in applied.changes.lines():
            click.echo(f"  {line}")

    emit(
        as_json,
        {
            "version": applied.version,
            "unchanged": applied.unchanged,
            "changes": applied.changes.to_json(),
        },
        human,
    )


@policy.command()
@catalog_option
@json_option
def show(catalog_url: str | None, as_json: bool) -> None:
    """The policy in force: tiers, and each resource's tier, RPO, and plans."""
    from reprieve.catalog import policies
    from reprieve.catalog.db import as_utc, open_catalog
    from reprieve.policy.model import show_duration

    with open_catalog(catalog_url) as catalog:
        found = policies.current(catalog)
    if found is None:
        raise NotFoundError("no policy has been applied; run `reprieve policy apply FILE`")
    row, current = found
    resources: list[dict[str, Any]] = []
    for name, res in current.resources.items():
        tier = current.tier_of(res)
        resources.append(
            {
                "resource": name,
                "kind": res.kind.value,
                "tenant": res.tenant,
                "tier": tier,
                "rpo_target_s": current.tiers[tier].rpo.total_seconds(),
                "rto_target_s": current.tiers[tier].rto.total_seconds(),
                "plans": current.plans_for(name),
            }
        )

    def human() -> None:
        click.echo(f"policy version {row.id}, applied {row.applied_at:%Y-%m-%d %H:%M} UTC")
        click.echo(f"by {row.applied_by} from {row.source}")
        for name, spec in current.tiers.items():
            click.echo(
                f"tier {name}: RTO {show_duration(spec.rto)}, RPO {show_duration(spec.rpo)}, "
                f"{spec.architecture.value}, drills {spec.drills.value}"
            )
        for r in resources:
            click.echo(
                f"resource {r['resource']}: {r['kind']}, tenant {r['tenant']}, "
                f"tier {r['tier']}, plans {', '.join(r['plans'])}"
            )

    emit(
        as_json,
        {
            "version": row.id,
            "applied_at": as_utc(row.applied_at).isoformat(),
            "applied_by": row.applied_by,
            "source": row.source,
            "policy": row.document,
            "resources": resources,
        },
        human,
    )
