"""What to drill, from the policy in force or from the command line alone.

A resource of the policy brings its kind, its tier's targets, the vaults
its rules write (primary) and copy to (DR), its checks and its connection.
Without a policy, ``--vault`` and ``--tier`` are enough: the kind is read
from the vault's points, and the tier's targets are the seed's.
"""

from __future__ import annotations

from collections.abc import Callable

from reprieve.drills.run import Opener, Subject
from reprieve.errors import NotFoundError, UsageError
from reprieve.policy.model import SEED_TIERS, Policy, TierSpec, VaultSpec
from reprieve.scheduler.plan import DRILLED_KINDS
from reprieve.scheduler.status import vaults_of
from reprieve.vault.keys import Secret
from reprieve.vault.repository import Vault, backend_for


def _tier(policy: Policy | None, name: str) -> TierSpec:
    tiers = policy.tiers if policy is not None else SEED_TIERS
    if name not in tiers:
        raise UsageError(f"no tier {name!r}; known: {', '.join(sorted(tiers))}")
    return tiers[name]


def from_policy(policy: Policy, resource: str, vault: str | None, tier: str | None) -> Subject:
    spec = policy.resources.get(resource)
    if spec is None:
        raise NotFoundError(f"no resource {resource!r} in the policy in force")
    tier_name = tier or policy.tier_of(spec)
    targets = _tier(policy, tier_name)
    primary, dr = vaults_of(policy, resource)
    return Subject(
        name=resource,
        kind=spec.kind.value,
        tier=tier_name,
        rto_s=targets.rto.total_seconds(),
        rpo_s=targets.rpo.total_seconds(),
        primary=[vault] if vault else [policy.vaults[v].url for v in primary],
        dr=[policy.vaults[v].url for v in dr],
        checks=list(spec.verify),
        connection=spec.connection,
    )


def alone(policy: Policy | None, resource: str, vault: str | None, tier: str | None) -> Subject:
    """A resource the policy does not name: the command line says everything."""
    if vault is None:
        raise UsageError(f"{resource!r} is not in a policy in force; give --vault and --tier")
    if tier is None:
        raise UsageError(f"give the tier {resource!r} is held to with --tier")
    targets = _tier(policy, tier)
    return Subject(
        name=resource,
        kind=None,
        tier=tier,
        rto_s=targets.rto.total_seconds(),
        rpo_s=targets.rpo.total_seconds(),
        primary=[vault],
    )


def of_tenant(policy: Policy, tenant: str) -> list[str]:
    if tenant not in policy.tenants:
        raise NotFoundError(f"no tenant {tenant!r} in the policy in force")
    names = sorted(
        r
        for r, spec in policy.resources.items()
        if spec.tenant == tenant and spec.kind.value in DRILLED_KINDS
    )
    if not names:
        raise UsageError(f"tenant {tenant!r} has no files or postgres resources to drill")
    return names


def opener(policy: Policy | None, fallback: Callable[[], Secret]) -> Opener:
    """Opens a vault by location: with the policy's secret for a vault the
    policy names, else with the command line's; each once."""
    from reprieve.scheduler.execute import secret_for

    specs: dict[str, tuple[str, VaultSpec]] = {}
    if policy is not None:
        specs = {spec.url: (name, spec) for name, spec in policy.vaults.items()}
    opened: dict[str, Vault] = {}

    def open_vault(location: str) -> Vault:
        if location not in opened:
            known = specs.get(location)
            secret = secret_for(*known) if known else fallback()
            opened[location] = Vault.open(backend_for(location), secret)
        return opened[location]

    return open_vault
