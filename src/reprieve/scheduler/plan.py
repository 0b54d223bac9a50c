"""What the policy asks for, as runs in time: pure functions, no catalog.

A *series* is one repeating run: a rule backing up one resource, or a
vault's daily retention for one rule. Each series fires on its cron
schedule; each firing is a *slot* with the time it is due, the latest time
it may start (``start_by``), and the time it must be done (``finish_by``).
Copies are not series: they follow their backup when it succeeds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from reprieve.errors import UsageError
from reprieve.policy.cron import Cron
from reprieve.policy.model import FOREVER, Policy, Rule

BACKUP = "backup"
COPY = "copy"
RETENTION = "retention"
DRILL = "drill"

# A drill may start any time in the week after its time (GRACE of overdue).
DRILL_START_WINDOW = timedelta(days=7)
DRILL_COMPLETION_WINDOW = timedelta(days=8)
DRILLED_KINDS = ("files", "postgres")

# Retention and lifecycle run once a day, at midnight UTC, and may start
# any time in the twelve hours after.
DAILY = "0 0 * * *"
DAILY_START_WINDOW = timedelta(hours=12)
DAILY_COMPLETION_WINDOW = timedelta(hours=23)

# The tag every scheduled point carries: which plan and rule made it, so
# retention only ever forgets what its own rule made.
RULE_TAG = "reprieve.rule"


@functools.cache
def cron(text: str) -> Cron:
    return Cron.parse(text)


@dataclass(frozen=True)
class Series:
    kind: str
    plan: str
    rule: str
    vault: str
    schedule: str
    start_window: timedelta
    completion_window: timedelta
    resource: str | None = None
    tenant: str | None = None
    tier: str | None = None
    # A retention series: the cold vault its lifecycle moves points to.
    target: str | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.plan}/{self.rule}:{self.resource or '*'}@{self.vault}"

    def slots(self, after: datetime, until: datetime) -> list[Slot]:
        """Every firing f with after < f <= until."""
        first = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        fires = cron(self.schedule).fires_between(first, until + timedelta(microseconds=1))
        return [Slot(self, f) for f in fires]


@dataclass(frozen=True)
class Slot:
    series: Series
    at: datetime

    @property
    def start_by(self) -> datetime:
        return self.at + self.series.start_window

    @property
    def finish_by(self) -> datetime:
        return self.at + self.series.completion_window

    @property
    def key(self) -> str:
        return f"{self.series.name}:{self.at.strftime('%Y%m%dT%H%MZ')}"


def rule_tag(plan: str, rule: str) -> str:
    return f"{plan}/{rule}"


def find_rule(policy: Policy, plan: str, rule: str) -> Rule:
    for candidate in policy.plans[plan].rules if plan in policy.plans else ():
        if candidate.name == rule:
            return candidate
    raise UsageError(f"rule {plan}/{rule} is no longer in the policy in force")


def series(policy: Policy) -> list[Series]:
    """Every scheduled series the policy defines, in a stable order."""
    found: list[Series] = []
    used: dict[tuple[str, str], Rule] = {}
    for resource in sorted(policy.resources):
        spec = policy.resources[resource]
        for plan in policy.plans_for(resource):
            for rule in policy.plans[plan].rules:
                used[(plan, rule.name)] = rule
                if rule.schedule is None:
                    continue  # continuous protection streams; it is not scheduled
                found.append(
                    Series(
                        kind=BACKUP,
                        plan=plan,
                        rule=rule.name,
                        vault=rule.vault,
                        schedule=rule.schedule,
                        start_window=rule.start_window,
                        completion_window=rule.completion_window,
                        resource=resource,
                        tenant=spec.tenant,
                        tier=policy.tier_of(spec),
                    )
                )
    found += _drills(policy)
    for (plan, name), rule in sorted(used.items()):
        cold = rule.lifecycle.cold_vault if rule.lifecycle else None
        for vault, target in [(rule.vault, cold)] + [(c.vault, None) for c in rule.copies]:
            found.append(
                Series(
                    kind=RETENTION,
                    plan=plan,
                    rule=name,
                    vault=vault,
                    schedule=DAILY,
                    start_window=DAILY_START_WINDOW,
                    completion_window=DAILY_COMPLETION_WINDOW,
                    target=target,
                )
            )
    return found


def _drills(policy: Policy) -> list[Series]:
    """A drill series per resource, at its tier's drill schedule, from the vault
    its first rule writes (the scenario picks the vault it really reads)."""
    found = []
    for resource in sorted(policy.resources):
        spec = policy.resources[resource]
        plans = policy.plans_for(resource)
        if spec.kind.value not in DRILLED_KINDS or not plans:
            continue
        tier = policy.tier_of(spec)
        found.append(
            Series(
                kind=DRILL,
                plan=plans[0],
                rule=f"drill-{tier}",
                vault=policy.plans[plans[0]].rules[0].vault,
                schedule=policy.tiers[tier].drill_cron,
                start_window=DRILL_START_WINDOW,
                completion_window=DRILL_COMPLETION_WINDOW,
                resource=resource,
                tenant=spec.tenant,
                tier=tier,
            )
        )
    return found


def resources_of(policy: Policy, plan: str) -> list[str]:
    """The resources a plan backs up."""
    return sorted(r for r in policy.resources if plan in policy.plans_for(r))


def keep_for(rule: Rule, vault: str) -> timedelta:
    """How long a rule's points are kept in ``vault`` (its own, or a copy's)."""
    if vault == rule.vault:
        return rule.retention
    for copy in rule.copies:
        if copy.vault == vault:
            return copy.retention
    raise UsageError(f"rule {rule.name} no longer copies to vault {vault}")


def expired(times: dict[str, datetime], keep: timedelta, now: datetime) -> list[str]:
    """The points (id → time) older than ``keep``, never the newest one.

    A resource whose backups stopped keeps its last point: an empty vault
    recovers nothing, however old the policy says its data may be.
    """
    if keep == FOREVER or not times:
        return []
    newest = max(times, key=lambda p: (times[p], p))
    return sorted(p for p, t in times.items() if p != newest and now - t > keep)
