"""A runbook file's typed model: a named, ordered list of typed steps and groups.

A runbook is an ordered recovery plan (a failover, a failback) run under
pressure, so its file is checked whole before anything runs: unknown keys,
missing keys, bad durations, references to vaults that are not there, and
two steps of the same name are errors, reported as one line
``FILE:LINE: where: what`` (exit 2; see ``runbooks/loader.py``).

The shape::

    name: failover-west                  # required; the run's record is filed under it
    description: Fail over orders to us-west-2
    scenario: failover                   # optional; what the record calls the run
    tier: premium                        # optional; the seed tier's RTO and RPO are the targets
    rto: 15m                             # optional; explicit targets win over the tier's
    rpo: 5m
    vaults:                              # optional; vault locations by name, as in a policy
      west: {url: s3://bucket/prefix, password_env: WEST_PASSWORD}
    steps:
      - name: provision DR environment
        command: ["terraform", "apply", "-auto-approve"]   # argv, or a string for /bin/sh -c
        timeout: 10m                     # every step: timeout (each attempt),
        retries: 2                       # retries after a failed attempt,
        retry_delay: 5s                  # and the pause between attempts
      - name: restore orders database
        restore: {kind: postgres, resource: orders-db, vault: west, target: /srv/pg/orders,
                  latest: true, port: 5544, start: true}     # or to_time / to_lsn / to_xid
      - name: restore app files
        restore: {kind: files, resource: app-files, vault: west, target: /srv/app,
                  point: latest, overwrite: false}    # point: an id prefix; or before: TIME
      - name: promote standby
        standby_promote: {resource: orders-db}
      - name: approve DNS switch
        approval: {prompt: "Switch orders.example.com to us-west-2?"}
      - group: smoke tests               # a group's steps run in parallel
        steps:
          - name: api health
            http_check: {url: "http://127.0.0.1:8080/health", status: 200, body_contains: ok}
      - name: switch DNS
        dns: {provider: zone-file, zone_file: /etc/bind/db.example.com, zone: example.com.,
              record: orders.example.com, type: A, value: 10.0.2.15, ttl: 60}
      - name: settle
        wait: 30s

Each step has exactly one of ``command``, ``http_check``, ``dns``, ``wait``,
``approval``, ``restore`` and ``standby_promote``. Beyond the example:

- ``http_check`` also takes ``method`` (default GET) and ``headers``;
- ``dns`` providers are ``zone-file`` (``zone_file``, optional ``zone``),
  ``hosts-file`` (``hosts_file``; A and AAAA only) and ``route53``
  (``hosted_zone_id``); types are A, AAAA and CNAME;
- a files ``restore`` takes ``include`` (subtrees) and ``before: TIME``
  instead of ``point``; a postgres one takes ``listen`` and ``os_user``;
- a restore's ``vault`` is a name from ``vaults`` or a location given in
  place (``{url: …, password_env: …}``).

Approvals and waits take no timeout or retries, and an approval may not sit
in a group (two questions at once on one terminal); a standby promotion takes
no timeout (it waits up to ten minutes on its own). Relative paths are
relative to the folder reprieve runs in, as on the command line.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator

from reprieve.errors import UsageError
from reprieve.policy.model import SEED_TIERS, Duration, Strict, VaultSpec


def _aware_time(value: Any) -> Any:
    """A time with its zone: YAML may already have made it a datetime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a time like '2026-11-22 11:30:00+00:00'") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"give the time zone of {value.isoformat(sep=' ')}, e.g. +00:00")
        return value
    raise ValueError(f"expected a time like '2026-11-22 11:30:00+00:00', not {value!r}")


def _command(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    raise ValueError(
        f'give an argv list such as ["terraform", "apply"] or a shell command string, not {value!r}'
    )


AwareTime = Annotated[datetime, BeforeValidator(_aware_time)]
Command = Annotated[list[str] | str, BeforeValidator(_command)]
Name = Annotated[str, Field(min_length=1)]

_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")
_LABEL = re.compile(r"^(\*|[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)$")


def host_name(name: str) -> str:
    """``name`` lower-cased, without a trailing dot; ValueError unless a DNS name."""
    bare = name.strip().rstrip(".").lower()
    if not bare or len(bare) > 253 or not all(_LABEL.match(p) for p in bare.split(".")):
        raise ValueError(f"{name!r} is not a DNS name")
    return bare


class StepType(StrEnum):
    COMMAND = "command"
    HTTP_CHECK = "http_check"
    DNS = "dns"
    WAIT = "wait"
    APPROVAL = "approval"
    RESTORE = "restore"
    STANDBY_PROMOTE = "standby_promote"


class HttpCheckSpec(Strict):
    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    status: int = Field(200, ge=100, le=599)
    body_contains: str | None = None

    @model_validator(mode="after")
    def _url(self) -> HttpCheckSpec:
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"url {self.url!r} must start with http:// or https:// and a host")
        if not self.method.isalpha():
            raise ValueError(f"method {self.method!r} is not an HTTP method")
        return self


class DnsProviderKind(StrEnum):
    ZONE_FILE = "zone-file"
    HOSTS_FILE = "hosts-file"
    ROUTE53 = "route53"


class RecordType(StrEnum):
    A = "A"
    AAAA = "AAAA"
    CNAME = "CNAME"


# Per provider: the keys it needs, and the optional ones it reads.
_PROVIDER_KEYS: dict[DnsProviderKind, tuple[set[str], set[str]]] = {
    DnsProviderKind.ZONE_FILE: ({"zone_file"}, {"zone"}),
    DnsProviderKind.HOSTS_FILE: ({"hosts_file"}, set()),
    DnsProviderKind.ROUTE53: ({"hosted_zone_id"}, set()),
}


class DnsSpec(Strict):
    provider: DnsProviderKind
    record: str
    type: RecordType = RecordType.A
    value: str
    ttl: int = Field(60, ge=0, le=2_147_483_647)
    zone_file: str | None = None
    hosts_file: str | None = None
    zone: str | None = None
    hosted_zone_id: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DnsSpec:
        needed, optional = _PROVIDER_KEYS[self.provider]
        for key in ("zone_file", "hosts_file", "zone", "hosted_zone_id"):
            given = getattr(self, key) is not None
            if key in needed and not given:
                raise ValueError(f"the {self.provider} provider needs {key}")
            if given and key not in needed | optional:
                raise ValueError(f"{key} does not apply to the {self.provider} provider")
        host_name(self.record)
        if self.zone is not None:
            host_name(self.zone)
        if self.provider is DnsProviderKind.HOSTS_FILE and self.type is RecordType.CNAME:
            raise ValueError("a hosts file holds addresses only (type A or AAAA)")
        try:
            if self.type is RecordType.A:
                ipaddress.IPv4Address(self.value)
            elif self.type is RecordType.AAAA:
                ipaddress.IPv6Address(self.value)
            else:
                host_name(self.value)
        except ValueError:
            raise ValueError(f"value {self.value!r} is not a valid {self.type} value") from None
        return self


class ApprovalSpec(Strict):
    prompt: Name


class StandbyPromoteSpec(Strict):
    resource: Name


def _vault_kind(value: Any) -> str:
    return "<location>" if isinstance(value, dict | VaultSpec) else "<name>"


# A vault by its name in the runbook's ``vaults``, or its location given in place.
VaultRef = Annotated[
    Annotated[str, Tag("<name>")] | Annotated[VaultSpec, Tag("<location>")],
    Discriminator(_vault_kind),
]


class FilesRestoreSpec(Strict):
    kind: Literal["files"]
    resource: Name
    vault: VaultRef
    target: Name
    # "latest", or the first characters (at least 4) of a point id.
    point: str = "latest"
    # Instead of ``point``: the newest point taken at or before this time.
    before: AwareTime | None = None
    overwrite: bool = False
    include: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_point(self) -> FilesRestoreSpec:
        if self.before is not None and self.point != "latest":
            raise ValueError("give point or before, not both")
        if self.point != "latest" and not re.fullmatch(r"[0-9a-fA-F]{4,}", self.point):
            raise ValueError(f"point {self.point!r}: give latest or at least 4 hex digits")
        return self


class PostgresRestoreSpec(Strict):
    kind: Literal["postgres"]
    resource: Name
    vault: VaultRef
    target: Name
    to_time: AwareTime | None = None
    to_lsn: str | None = None
    to_xid: str | None = None
    latest: bool = False
    port: int | None = Field(None, ge=1, le=65535)
    start: bool = False
    listen: str = "127.0.0.1"
    # Who runs the recovered cluster (default: postgres when reprieve runs as root).
    os_user: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> PostgresRestoreSpec:
        given = [self.to_time, self.to_lsn, self.to_xid]
        if sum(v is not None for v in given) + int(self.latest) != 1:
            raise ValueError("give exactly one of to_time, to_lsn, to_xid, latest: true")
        if self.to_lsn is not None and not _LSN.fullmatch(self.to_lsn):
            raise ValueError(f"to_lsn {self.to_lsn!r} is not an LSN like 0/5000060")
        if self.to_xid is not None and not self.to_xid.isdigit():
            raise ValueError(f"to_xid {self.to_xid!r} is not a transaction id")
        return self


def _restore_kind(value: Any) -> str | None:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return {"files": "<files>", "postgres": "<postgres>"}.get(str(kind))


RestoreSpec = Annotated[
    Annotated[FilesRestoreSpec, Tag("<files>")] | Annotated[PostgresRestoreSpec, Tag("<postgres>")],
    Discriminator(
        _restore_kind,
        custom_error_type="restore_kind",
        custom_error_message="kind must be files or postgres",
    ),
]

# The step-type keys, each naming the field that holds its settings.
STEP_TYPES = tuple(t.value for t in StepType)


class StepSpec(Strict):
    name: Name
    # Bounds one attempt; retries are further attempts, retry_delay apart.
    timeout: Duration | None = None
    retries: int = Field(0, ge=0, le=1000)
    retry_delay: Duration = timedelta(seconds=5)
    command: Command | None = None
    http_check: HttpCheckSpec | None = None
    dns: DnsSpec | None = None
    wait: Duration | None = None
    approval: ApprovalSpec | None = None
    restore: RestoreSpec | None = None
    standby_promote: StandbyPromoteSpec | None = None

    @model_validator(mode="after")
    def _one_type(self) -> StepSpec:
        given = [key for key in STEP_TYPES if getattr(self, key) is not None]
        if len(given) != 1:
            shown = ", ".join(given) if given else "none"
            raise ValueError(f"a step has exactly one of {', '.join(STEP_TYPES)} (given: {shown})")
        if self.type in (StepType.APPROVAL, StepType.WAIT) and (
            self.timeout is not None or self.retries
        ):
            raise ValueError(f"a {self.type} step takes no timeout or retries")
        if self.type is StepType.STANDBY_PROMOTE and self.timeout is not None:
            raise ValueError("a standby_promote step takes no timeout (promote waits up to 10m)")
        return self

    @property
    def type(self) -> StepType:
        return next(t for t in StepType if getattr(self, t.value) is not None)


class GroupSpec(Strict):
    group: Name
    steps: list[StepSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_questions(self) -> GroupSpec:
        for step in self.steps:
            if step.type is StepType.APPROVAL:
                raise ValueError(
                    f"approval step {step.name!r} cannot run in parallel; put it outside the group"
                )
        return self


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "<group>" if "group" in value else "<step>"
    return "<group>" if isinstance(value, GroupSpec) else "<step>"


Item = Annotated[
    Annotated[StepSpec, Tag("<step>")] | Annotated[GroupSpec, Tag("<group>")],
    Discriminator(_item_kind),
]


class Runbook(Strict):
    name: Name
    description: str = ""
    scenario: str = "failover"
    tier: str | None = None
    rto: Duration | None = None
    rpo: Duration | None = None
    vaults: dict[str, VaultSpec] = Field(default_factory=dict)
    steps: list[Item] = Field(min_length=1)

    @property
    def rto_target(self) -> timedelta | None:
        if self.rto is not None:
            return self.rto
        return SEED_TIERS[self.tier].rto if self.tier in SEED_TIERS else None

    @property
    def rpo_target(self) -> timedelta | None:
        if self.rpo is not None:
            return self.rpo
        return SEED_TIERS[self.tier].rpo if self.tier in SEED_TIERS else None

    def item_of(self, name: str) -> int:
        """The index of the top-level item called ``name``, or holding a step of that name."""
        for i, item in enumerate(self.steps):
            if isinstance(item, GroupSpec):
                if item.group == name or any(s.name == name for s in item.steps):
                    return i
            elif item.name == name:
                return i
        names = ", ".join(repr(n) for n in self.item_names())
        raise UsageError(f"runbook {self.name} has no step {name!r}; its steps: {names}")

    def item_names(self) -> list[str]:
        return [i.group if isinstance(i, GroupSpec) else i.name for i in self.steps]
