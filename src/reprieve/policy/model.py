"""The policy file's typed model: vaults, tiers, compliance classes, tenants,
resources, and plans.

Parsed at the edge (``policy/loader.py``) from YAML into these frozen
pydantic models; the scheduler and the catalog never see a raw dict.
Durations are written ``90s``, ``5m``, ``12h``, ``35d``, ``2w``, ``7y``;
a retention may also be ``forever``. Unknown keys are errors, so a typo
never silently turns a rule off.

The seed's three tiers and three compliance classes are defaults: a policy
names only what it changes or adds.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from reprieve.errors import UsageError
from reprieve.policy.cron import Cron, CronError
from reprieve.policy.retention import parse_duration

FOREVER = timedelta.max


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except UsageError as exc:
            raise ValueError(exc.detail) from exc
    if isinstance(value, timedelta):
        return value
    raise ValueError(f"expected a duration such as 15m, 12h or 35d, not {value!r}")


def _retention(value: Any) -> Any:
    if value == "forever":
        return FOREVER
    return _duration(value)


def show_duration(value: timedelta) -> str:
    """``5m``, ``1d12h``, ``forever``: the policy file's own spelling."""
    if value == FOREVER:
        return "forever"
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


_AS_WRITTEN = PlainSerializer(show_duration, return_type=str, when_used="json")
Duration = Annotated[timedelta, BeforeValidator(_duration), _AS_WRITTEN]
Retention = Annotated[timedelta, BeforeValidator(_retention), _AS_WRITTEN]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(StrEnum):
    ACTIVE_ACTIVE = "active-active"
    WARM_STANDBY = "warm-standby"
    PILOT_LIGHT = "pilot-light"


class DrillFrequency(StrEnum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMI_ANNUALLY = "semi-annually"
    ANNUALLY = "annually"


DRILL_CRON = {
    DrillFrequency.MONTHLY: "0 3 1 * *",
    DrillFrequency.QUARTERLY: "0 3 1 1,4,7,10 *",
    DrillFrequency.SEMI_ANNUALLY: "0 3 1 1,7 *",
    DrillFrequency.ANNUALLY: "0 3 1 1 *",
}
# The longest a frequency leaves between drills: a month may have 31 days.
DRILL_DAYS = {
    DrillFrequency.MONTHLY: 31,
    DrillFrequency.QUARTERLY: 92,
    DrillFrequency.SEMI_ANNUALLY: 184,
    DrillFrequency.ANNUALLY: 366,
}


class ResourceKind(StrEnum):
    FILES = "files"
    POSTGRES = "postgres"
    SQLITE = "sqlite"
    KUBERNETES = "kubernetes"
    ETCD = "etcd"
    BUCKET = "bucket"


class WalMode(StrEnum):
    ARCHIVE = "archive"  # archive_command runs `wal push` (or the spool helper)
    STREAM = "stream"  # the server streams WAL with pg_receivewal


class VaultSpec(Strict):
    """Where a vault lives and how to open it; secrets stay outside the file."""

    url: str
    region: str = ""
    password_env: str | None = None
    password_file: str | None = None
    key_file: str | None = None


class TierSpec(Strict):
    rto: Duration
    rpo: Duration
    architecture: Architecture
    drills: DrillFrequency
    # When the server runs the drills (cron, UTC); by default 03:00 on the
    # first day of each month, quarter, half-year, or year.
    drill_schedule: str | None = None
    # The plan for this tier's resources that no plan selects by tags.
    plan: str | None = None

    @model_validator(mode="after")
    def _drill_schedule(self) -> TierSpec:
        if self.drill_schedule is not None:
            try:
                Cron.parse(self.drill_schedule)
            except CronError as exc:
                raise ValueError(f"drill_schedule {self.drill_schedule!r}: {exc}") from exc
        return self

    @property
    def drill_cron(self) -> str:
        return self.drill_schedule or DRILL_CRON[self.drills]

    @property
    def drill_every(self) -> timedelta:
        return timedelta(days=DRILL_DAYS[self.drills])


class ComplianceClass(Strict):
    """A retention floor no plan may undercut."""

    retention: Retention


class TenantSpec(Strict):
    tier: str


class Verification(Strict):
    """A check a drill runs on the restored copy; exactly one of ``sql``,
    ``sqlite``, ``command`` and ``http``.

    ``sql`` (PostgreSQL) runs in ``database`` and passes when the first value
    of the first row equals ``expect`` (compared as text). ``sqlite`` names a
    database file inside a restored files resource (every SQLite file found is
    checked anyway). ``command`` runs with the sandbox in its environment
    (REPRIEVE_DRILL_TARGET, and PGHOST/PGPORT/PGUSER for a database) and passes
    on exit 0. ``http`` is a URL (``{port}`` is the restored database's port)
    that must answer ``status`` with ``body_contains`` in its body.
    """

    name: str | None = None
    sql: str | None = None
    expect: str | int | float | bool | None = None
    database: str = "postgres"
    sqlite: str | None = None
    command: list[str] | str | None = None
    http: str | None = None
    status: int = 200
    body_contains: str | None = None
    timeout: Duration = timedelta(seconds=60)

    @model_validator(mode="after")
    def _one(self) -> Verification:
        given = [k for k in ("sql", "sqlite", "command", "http") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of sql, sqlite, command, http")
        if self.sql is not None and self.expect is None:
            raise ValueError("a sql check needs `expect`")
        if self.sqlite is not None and (
            self.sqlite.startswith("/") or ".." in self.sqlite.split("/")
        ):
            raise ValueError("sqlite names a file inside the restored folder: a relative path")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("sql", "sqlite", "command", "http") if getattr(self, k) is not None)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        shown = getattr(self, self.kind)
        text = " ".join(shown) if isinstance(shown, list) else str(shown)
        return f"{self.kind}: {text[:60]}"


class ResourceSpec(Strict):
    kind: ResourceKind
    tenant: str
    # Defaults to the tenant's tier.
    tier: str | None = None
    data_class: str | None = None
    paths: list[str] = Field(default_factory=list)
    # PostgreSQL: a libpq connection string, how WAL reaches the vault, and
    # whether commits wait for the streamer (zero RPO).
    connection: str | None = None
    wal_mode: WalMode | None = None
    synchronous: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    # What a drill checks on the restored copy, beyond content digests
    # (files), the server starting and amcheck (PostgreSQL).
    verify: list[Verification] = Field(default_factory=list)

    @model_validator(mode="after")
    def _database(self) -> ResourceSpec:
        if self.wal_mode is not None and self.kind != ResourceKind.POSTGRES:
            raise ValueError("wal_mode applies to postgres resources only")
        if self.synchronous and self.wal_mode != WalMode.STREAM:
            raise ValueError("synchronous needs wal_mode: stream")
        for check in self.verify:
            if check.sql is not None and self.kind != ResourceKind.POSTGRES:
                raise ValueError("sql checks apply to postgres resources only")
            if check.sqlite is not None and self.kind != ResourceKind.FILES:
                raise ValueError("sqlite checks name a file of a files resource")
        return self


class CopyAction(Strict):
    """After each backup, copy the new point to another vault (another region)."""

    vault: str
    retention: Retention


class Lifecycle(Strict):
    cold_vault: str | None = None
    cold_after: Duration | None = None
    delete_after: Retention | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Lifecycle:
        if (self.cold_after is None) != (self.cold_vault is None):
            raise ValueError("cold_after and cold_vault go together")
        if self.cold_after and self.delete_after and self.cold_after >= self.delete_after:
            raise ValueError("cold_after must come before delete_after")
        return self


class Rule(Strict):
    """When and where a plan's resources are backed up, and for how long."""

    name: str
    schedule: str | None = None
    continuous: bool = False
    vault: str
    # A run that cannot start this long after its time is recorded as missed.
    start_window: Duration = timedelta(hours=1)
    # A run still going this long after its time is stopped and failed.
    completion_window: Duration = timedelta(hours=8)
    retention: Retention
    lifecycle: Lifecycle | None = None
    copies: list[CopyAction] = Field(default_factory=list)

    @model_validator(mode="after")
    def _when(self) -> Rule:
        if (self.schedule is None) == (not self.continuous):
            raise ValueError("give either a schedule (cron) or continuous: true")
        if self.schedule is not None:
            try:
                Cron.parse(self.schedule)
            except CronError as exc:
                raise ValueError(f"schedule {self.schedule!r}: {exc}") from exc
        if self.start_window > self.completion_window:
            raise ValueError("start_window must not be longer than completion_window")
        return self


class PlanSpec(Strict):
    # Tags a resource must all carry to be selected: tenant, tier,
    # data_class, kind, or any of its own tags. Empty selects nothing by
    # tags: such a plan is used as a tier's default plan.
    select: dict[str, str] = Field(default_factory=dict)
    rules: list[Rule] = Field(min_length=1)


def _seed_tiers() -> dict[str, TierSpec]:
    rows = (
        ("premium", "15m", "5m", Architecture.ACTIVE_ACTIVE, DrillFrequency.MONTHLY),
        ("standard", "60m", "15m", Architecture.WARM_STANDBY, DrillFrequency.QUARTERLY),
        ("basic", "240m", "60m", Architecture.PILOT_LIGHT, DrillFrequency.SEMI_ANNUALLY),
    )
    return {
        name: TierSpec(
            rto=parse_duration(rto), rpo=parse_duration(rpo), architecture=arch, drills=drills
        )
        for name, rto, rpo, arch, drills in rows
    }


SEED_TIERS = _seed_tiers()
SEED_COMPLIANCE = {
    "financial": ComplianceClass(retention=parse_duration("7y")),
    "claims": ComplianceClass(retention=parse_duration("10y")),
    "audit": ComplianceClass(retention=FOREVER),
}


class Policy(Strict):
    version: Literal[1] = 1
    vaults: dict[str, VaultSpec]
    tiers: dict[str, TierSpec] = Field(default_factory=dict)
    compliance: dict[str, ComplianceClass] = Field(default_factory=dict)
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    resources: dict[str, ResourceSpec] = Field(default_factory=dict)
    plans: dict[str, PlanSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _seed_defaults(cls, data: Any) -> Any:
        """The seed's tiers and classes, overridden or extended by the file's."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for key, seed in (("tiers", SEED_TIERS), ("compliance", SEED_COMPLIANCE)):
            given = merged.get(key) or {}
            if isinstance(given, dict):
                merged[key] = {**seed, **given}
        return merged

    def tier_of(self, resource: ResourceSpec) -> str:
        return resource.tier or self.tenants[resource.tenant].tier

    def labels(self, name: str) -> dict[str, str]:
        """The tags plans select on: the resource's own, plus its standing ones."""
        res = self.resources[name]
        labels = dict(res.tags)
        labels.update(tenant=res.tenant, tier=self.tier_of(res), kind=res.kind.value)
        if res.data_class:
            labels["data_class"] = res.data_class
        return labels

    def plans_for(self, name: str) -> list[str]:
        """Plans whose tags select the resource; else its tier's default plan."""
        labels = self.labels(name)
        chosen = [
            plan_name
            for plan_name, plan in self.plans.items()
            if plan.select and all(labels.get(k) == v for k, v in plan.select.items())
        ]
        if chosen:
            return chosen
        default = self.tiers[labels["tier"]].plan
        return [default] if default else []
