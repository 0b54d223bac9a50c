"""Lifecycle: move aging points to a cold vault, and expire old ones.

Points older than ``cold_after`` are copied into the cold vault (a separate
vault, usually on a cheaper S3 storage class) and then forgotten in the hot
one; points older than ``delete_after`` are forgotten wherever they are.
Nothing is forgotten while it is retained or on legal hold: such points are
kept and reported with the reason. A point is forgotten in the hot vault
only after its copy is saved in the cold one, so a run killed midway loses
nothing, and the next run finds the copy by its origin and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reprieve.engine.copy import copy_points
from reprieve.engine.progress import Progress
from reprieve.errors import UsageError
from reprieve.vault.immutability import blocker, holds
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.points import Point
from reprieve.vault.prune import plan_prune, run_prune
from reprieve.vault.repository import Vault


@dataclass(frozen=True)
class LifecycleRules:
    cold_after: timedelta | None = None
    delete_after: timedelta | None = None

    def check(self, has_cold_vault: bool) -> None:
        if self.cold_after is None and self.delete_after is None:
            raise UsageError("give --cold-after, --delete-after, or both")
        if self.cold_after is not None and not has_cold_vault:
            raise UsageError("--cold-after needs --cold-vault, where the points go")
        if (
            self.cold_after is not None
            and self.delete_after is not None
            and self.delete_after <= self.cold_after
        ):
            raise UsageError("--delete-after must be longer than --cold-after")


@dataclass
class LifecyclePlan:
    move: list[Point] = field(default_factory=list)
    # (vault role "hot" or "cold", point) pairs to forget.
    delete: list[tuple[str, Point]] = field(default_factory=list)
    kept: list[tuple[str, Point, str]] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # hot point → its cold copy
    pruned: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "move": [{**_brief(p), "cold_point": self.moved.get(p.id)} for p in self.move],
            "delete": [{"vault": role, **_brief(p)} for role, p in self.delete],
            "kept": [{"vault": role, **_brief(p), "reason": why} for role, p, why in self.kept],
            "prune": self.pruned,
        }


def _brief(point: Point) -> dict[str, Any]:
    summary = point.summary()
    return {"point": point.id, "resource": point.resource, "time": summary["time"]}


def plan_lifecycle(
    hot: Vault,
    cold: Vault | None,
    rules: LifecycleRules,
    now: datetime,
    resource: str | None = None,
) -> LifecyclePlan:
    plan = LifecyclePlan()
    vaults = [("hot", hot)] + ([("cold", cold)] if cold is not None else [])
    for role, vault in vaults:
        held = holds(vault)
        for point in vault.points(resource):
            age = now - point.time
            if rules.delete_after is not None and age >= rules.delete_after:
                why = blocker(vault, point, held, now, bypass=False)
                if why is None:
                    plan.delete.append((role, point))
                else:
                    plan.kept.append((role, point, why))
            elif role == "hot" and rules.cold_after is not None and age >= rules.cold_after:
                plan.move.append(point)
    return plan


def run_lifecycle(
    hot: Vault,
    cold: Vault | None,
    plan: LifecyclePlan,
    progress: Progress,
    prune: bool = True,
) -> None:
    """Carry out ``plan``: copy, then forget, then prune what was forgotten from."""
    now = datetime.now(UTC)
    forget_in_hot: list[Point] = []
    if plan.move and cold is not None:
        result = copy_points(hot, cold, point_ids=[p.id for p in plan.move], progress=progress)
        damaged = dict(result.damaged)
        prefix = f"{hot.config.id}/"
        copies = {
            p.origin.removeprefix(prefix): p.id
            for p in cold.points()
            if p.origin and p.origin.startswith(prefix)
        }
        held = holds(hot)
        for point in plan.move:
            if point.id not in copies:
                error = damaged.get(point.id, "not copied")
                plan.kept.append(("hot", point, f"not copied to the cold vault: {error}"))
                continue
            plan.moved[point.id] = copies[point.id]
            blocked = blocker(hot, point, held, now, bypass=False)
            if blocked is None:
                forget_in_hot.append(point)
            else:
                plan.kept.append(("hot", point, f"copied to the cold vault; {blocked}"))
    forget = {"hot": forget_in_hot + [p for r, p in plan.delete if r == "hot"]}
    forget["cold"] = [p for r, p in plan.delete if r == "cold"]
    for role, vault in (("hot", hot), ("cold", cold)):
        if vault is None or not forget[role]:
            continue
        with VaultLock(vault.backend, LockKind.EXCLUSIVE, "lifecycle"):
            # Holds placed since planning count: look again under the lock.
            held = holds(vault, strict=True)
            for point in forget[role]:
                blocked = blocker(vault, point, held, datetime.now(UTC), bypass=False)
                if blocked is not None:
                    plan.kept.append((role, point, blocked))
                    plan.delete = [(r, p) for r, p in plan.delete if p.id != point.id]
                    continue
                vault.forget_point(point.id)
            if prune:
                vault.reload_index()
                pruning = plan_prune(vault)
                run_prune(vault, pruning)
                plan.pruned[role] = pruning.to_json()
