"""Read a policy file into a :class:`Policy`, or say every way it is wrong.

Each problem is one line, ``FILE:LINE: where: what``, with the line of the
key at fault, so a policy is fixed before it is applied rather than at
3 a.m. Checks run in three passes and every pass reports all it finds:

1. YAML syntax, and duplicate keys (which YAML would silently collapse);
2. shape: unknown keys, missing keys, wrong types, bad durations and
   schedules (pydantic, with the errors mapped back to lines);
3. meaning: references to vaults, tiers, tenants, plans, and compliance
   classes that do not exist; resources no plan protects; schedules slower
   than the tier's RPO; retention below the compliance floor.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from reprieve.errors import UsageError
from reprieve.policy.cron import Cron
from reprieve.policy.model import Policy, Rule, show_duration

Loc = tuple[str | int, ...]


class PolicyError(UsageError):
    """A policy that cannot be applied; one line per problem (exit 2)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    text: str


def _plain(node: yaml.Node, loc: Loc, lines: dict[Loc, int], dupes: list[tuple[Loc, int]]) -> Any:
    """Python values from a composed YAML node, recording each key's line."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            here = (*loc, key)
            if key in out:
                dupes.append((here, key_node.start_mark.line + 1))
            lines[here] = key_node.start_mark.line + 1
            out[key] = _plain(value_node, here, lines, dupes)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*loc, i), lines, dupes) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def where(loc: Loc) -> str:
    """``plans.nightly.rules[0].schedule``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line(lines: dict[Loc, int], loc: Loc) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model whose keys are at ``loc``, following fields, lists and dicts."""
    current: Any = Policy
    for part in loc:
        origin = typing.get_origin(current)
        if origin in (Union, types.UnionType):
            current = next(a for a in typing.get_args(current) if a is not type(None))
            origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif origin in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    while typing.get_origin(current) in (Union, types.UnionType):
        current = next(a for a in typing.get_args(current) if a is not type(None))
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _shape_problem(error: Any) -> tuple[Loc, str]:
    loc: Loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    return shape_problem(error, loc, lambda: _model_at(loc[:-1]))


def shape_problem(
    error: Any, loc: Loc, model: Callable[[], type[BaseModel] | None]
) -> tuple[Loc, str]:
    """(where, what) of one pydantic error at ``loc``, in a file's own words;
    ``model`` finds the model whose keys an unknown key was not among."""
    kind = error["type"]
    if kind == "extra_forbidden":
        found = model()
        allowed = f" (allowed: {', '.join(found.model_fields)})" if found else ""
        return loc, f"unknown key {loc[-1]!r}{allowed}"
    if kind == "missing":
        return loc[:-1], f"missing required key {loc[-1]!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind.endswith("_type") or kind in ("enum", "literal_error"):
        message += f", not {error['input']!r}"
    return loc, message


def _meaning(policy: Policy) -> Iterator[tuple[Loc, str]]:
    """References that lead nowhere, and rules that cannot keep their promises."""
    vaults = set(policy.vaults)
    for name, tier in policy.tiers.items():
        if tier.plan is not None and tier.plan not in policy.plans:
            yield ("tiers", name, "plan"), f"no plan named {tier.plan!r}"
    for name, tenant in policy.tenants.items():
        if tenant.tier not in policy.tiers:
            yield ("tenants", name, "tier"), f"no tier named {tenant.tier!r}"
    for plan_name, plan in policy.plans.items():
        for i, rule in enumerate(plan.rules):
            at: Loc = ("plans", plan_name, "rules", i)
            if rule.vault not in vaults:
                yield (*at, "vault"), f"no vault named {rule.vault!r}"
            for j, action in enumerate(rule.copies):
                if action.vault not in vaults:
                    yield (*at, "copies", j, "vault"), f"no vault named {action.vault!r}"
            cold = rule.lifecycle.cold_vault if rule.lifecycle else None
            if cold is not None and cold not in vaults:
                yield (*at, "lifecycle", "cold_vault"), f"no vault named {cold!r}"
    for name, res in policy.resources.items():
        at = ("resources", name)
        if res.tenant not in policy.tenants:
            yield (*at, "tenant"), f"no tenant named {res.tenant!r}"
            continue
        tier_name = policy.tier_of(res)
        if tier_name not in policy.tiers:
            yield (*at, "tier"), f"no tier named {tier_name!r}"
            continue
        if res.data_class is not None and res.data_class not in policy.compliance:
            yield (*at, "data_class"), f"no compliance class named {res.data_class!r}"
        plans = [p for p in policy.plans_for(name) if p in policy.plans]
        if not plans:
            yield (
                at,
                (
                    f"no plan protects it: no plan selects it by tags and tier {tier_name!r} "
                    "names no default plan"
                ),
            )
            continue
        yield from _promises(policy, name, plans)


@functools.cache
def _longest_gap(schedule: str) -> timedelta:
    # Tens of milliseconds each (a walk over the calendar's 400-year cycle):
    # worked out once per schedule, not once per resource the rule covers.
    return Cron.parse(schedule).longest_gap()


def _promises(policy: Policy, name: str, plans: list[str]) -> Iterator[tuple[Loc, str]]:
    """Schedules that cannot meet the resource's RPO; retention under its floor."""
    res = policy.resources[name]
    tier_name = policy.tier_of(res)
    rpo = policy.tiers[tier_name].rpo
    rules: list[tuple[Loc, Rule]] = [
        (("plans", p, "rules", i), rule)
        for p in plans
        for i, rule in enumerate(policy.plans[p].rules)
    ]
    gaps = [(at, rule, _longest_gap(rule.schedule)) for at, rule in rules if rule.schedule]
    # A database whose WAL is archived or streamed is protected continuously;
    # its schedule is only for base backups.
    continuous = res.wal_mode is not None or any(rule.continuous for _, rule in rules)
    if not continuous and all(gap > rpo for _, _, gap in gaps):
        at, rule, gap = min(gaps, key=lambda g: g[2])
        yield (
            (*at, "schedule"),
            (
                f"{rule.schedule!r} leaves up to {show_duration(gap)} between backups of "
                f"{name}, slower than tier {tier_name}'s RPO of {show_duration(rpo)}"
            ),
        )
    if res.data_class is None or res.data_class not in policy.compliance:
        return
    floor = policy.compliance[res.data_class].retention
    for at, rule in rules:
        kept = [((*at, "retention"), rule.retention)]
        kept += [((*at, "copies", j, "retention"), c.retention) for j, c in enumerate(rule.copies)]
        if rule.lifecycle and rule.lifecycle.delete_after is not None:
            kept.append(((*at, "lifecycle", "delete_after"), rule.lifecycle.delete_after))
        for loc, keep in kept:
            if keep < floor:
                yield (
                    loc,
                    (
                        f"keeps {name} for {show_duration(keep)}, below the {res.data_class} "
                        f"compliance floor of {show_duration(floor)}"
                    ),
                )


def parse_policy(text: str, source: str = "policy.yaml") -> Policy:
    """The policy in ``text``; :class:`PolicyError` lists every problem."""
    lines: dict[Loc, int] = {}
    dupes: list[tuple[Loc, int]] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError([f"{source}:{line}: YAML syntax error: {problem}"]) from exc
    data = _plain(root, (), lines, dupes) if root is not None else None
    if dupes:
        raise PolicyError(
            [f"{source}:{line}: {where(loc)}: key given twice" for loc, line in dupes]
        )
    if not isinstance(data, dict):
        raise PolicyError([f"{source}:1: a policy is a mapping with at least a vaults key"])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        found = [_shape_problem(e) for e in exc.errors()]
        raise PolicyError(_render(source, lines, found)) from exc
    problems = list(_meaning(policy))
    if problems:
        raise PolicyError(_render(source, lines, problems))
    return policy


def _render(source: str, lines: dict[Loc, int], found: list[tuple[Loc, str]]) -> list[str]:
    rows = sorted((_line(lines, loc), where(loc), message) for loc, message in found)
    return [f"{source}:{line}: {at}: {message}" for line, at, message in dict.fromkeys(rows)]


def read_document(path: Path, what: str) -> str:
    """The text of a YAML document the user gave; a missing or unreadable one is
    one line (exit 2)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"{what} {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from exc


def load_policy(path: Path) -> LoadedPolicy:
    text = read_document(path, "policy file")
    return LoadedPolicy(parse_policy(text, str(path)), text)
