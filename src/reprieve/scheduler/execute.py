"""The executor the service runs jobs with: it opens the policy's vaults and
backs up, copies, and applies retention and lifecycle.

Each vault's key is derived once per process (Argon2 is slow on purpose)
and reused; every job gets its own vault object and storage client, so jobs
on other threads share nothing mutable. Every job records what it made and
forgot in the catalog and appends its audit event.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reprieve.catalog import trail
from reprieve.catalog.db import Catalog
from reprieve.engine.backup import backup_files
from reprieve.engine.copy import copy_points
from reprieve.engine.lifecycle import LifecycleRules, plan_lifecycle, run_lifecycle
from reprieve.errors import DamageError, DrillFailed, UsageError
from reprieve.policy.model import FOREVER, Policy, ResourceKind, ResourceSpec, Rule, VaultSpec
from reprieve.scheduler.plan import (
    BACKUP,
    COPY,
    DRILL,
    RETENTION,
    RULE_TAG,
    expired,
    find_rule,
    keep_for,
    resources_of,
    rule_tag,
)
from reprieve.scheduler.queue import JobView
from reprieve.scheduler.runner import JobCancelled
from reprieve.sources.postgres import base_backup
from reprieve.vault.immutability import blocker, holds, retain_until
from reprieve.vault.keys import Secret
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.prune import plan_prune, run_prune
from reprieve.vault.repository import Vault, VaultConfig, backend_for

log = logging.getLogger("reprieve.scheduler")


def secret_for(name: str, spec: VaultSpec) -> Secret:
    """The vault's secret, from where the policy says (never from the file itself)."""
    try:
        if spec.key_file:
            return Secret.keyfile(Path(spec.key_file).read_bytes())
        if spec.password_file:
            return Secret.passphrase(Path(spec.password_file).read_text().rstrip("\r\n"))
    except OSError as exc:
        raise UsageError(f"vault {name}: cannot read its secret: {exc.strerror}") from exc
    env = spec.password_env or "REPRIEVE_PASSWORD"
    password = os.environ.get(env)
    if password is None:
        raise UsageError(f"vault {name}: set {env} to its password")
    return Secret.passphrase(password)


class VaultKeys:
    """Opens the policy's vaults by name, deriving each key once."""

    def __init__(self) -> None:
        self._opened: dict[tuple[str, str], tuple[VaultConfig, Any, str]] = {}
        self._lock = threading.Lock()

    def open(self, policy: Policy, name: str) -> Vault:
        spec = policy.vaults.get(name)
        if spec is None:
            raise UsageError(f"vault {name} is no longer in the policy in force")
        backend = backend_for(spec.url)
        with self._lock:
            known = self._opened.get((name, spec.url))
            if known is None:
                vault = Vault.open(backend, secret_for(name, spec))
                self._opened[(name, spec.url)] = (vault.config, vault.master, vault.key_name)
                return vault
        config, master, key_name = known
        return Vault(backend, config, master, key_name)


class StopCheck:
    """Progress that stops the job when the scheduler asks."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.bytes = 0

    def start(self, label: str, total_bytes: int | None = None) -> None:
        self._check()

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        self.bytes += nbytes
        self._check()

    def finish(self) -> None:
        return None

    def _check(self) -> None:
        if self.stop.is_set():
            raise JobCancelled("stopped")


def lock_span(vault: Vault, keep: timedelta) -> timedelta | None:
    """How long a locked vault locks a rule's point: its retention, inside the bounds."""
    config = vault.config
    if not config.lock:
        return None
    span = max(keep, timedelta(seconds=config.min_retention_s))
    if config.max_retention_s and (
        keep == FOREVER or span.total_seconds() > config.max_retention_s
    ):
        span = timedelta(seconds=config.max_retention_s)
    return None if span == FOREVER else span


class VaultExecutor:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.keys = VaultKeys()

    def __call__(self, job: JobView, policy: Policy, stop: threading.Event) -> dict[str, Any]:
        if job.kind == DRILL:
            return self.drill(job, policy)
        rule = find_rule(policy, job.plan, job.rule)
        if job.kind == BACKUP:
            return self.backup(job, policy, rule, stop)
        if job.kind == COPY:
            return self.copy(job, policy, rule, stop)
        if job.kind == RETENTION:
            return self.retention(job, policy, rule, stop)
        raise UsageError(f"unknown job kind {job.kind!r}")

    def drill(self, job: JobView, policy: Policy) -> dict[str, Any]:
        """The resource's scheduled drill: recorded pass or fail; a failure fails the job."""
        from reprieve.drills import store, subjects
        from reprieve.drills.model import Scenario
        from reprieve.drills.run import Request, run_drill

        assert job.resource is not None
        subject = subjects.from_policy(policy, job.resource, None, None)
        scenario = Scenario.DATABASE_FAILURE if subject.kind == "postgres" else Scenario.FILES_LOSS
        request = Request([subject], scenario, job.resource, policy.resources[job.resource].tenant)

        def no_secret() -> Any:
            raise UsageError(f"resource {job.resource}: its vault is not in the policy")

        done = run_drill(request, subjects.opener(policy, no_secret))
        store.save(self.catalog, done)
        if not done.passed:
            raise DrillFailed(f"drill {done.id} failed: {done.reasons()[0]}")
        return {"drill": done.id, "rto_s": done.rto_s, "rpo_s": done.rpo_s}

    def backup(
        self, job: JobView, policy: Policy, rule: Rule, stop: threading.Event
    ) -> dict[str, Any]:
        assert job.resource is not None
        spec = policy.resources[job.resource]
        if spec.kind not in (ResourceKind.FILES, ResourceKind.POSTGRES):
            raise UsageError(
                f"resource {job.resource}: scheduled {spec.kind} backups are not available yet"
            )
        vault = self.keys.open(policy, job.vault)
        tags = {RULE_TAG: rule_tag(job.plan, job.rule), "tenant": spec.tenant, "job": str(job.id)}
        if spec.kind == ResourceKind.POSTGRES:
            return self.base_backup(job, spec, vault, tags, rule, stop)
        result = backup_files(
            vault,
            spec.paths,
            job.resource,
            tags,
            progress=StopCheck(stop),
            retain=lock_span(vault, rule.retention),
        )
        doc = result.summary()
        self._note([vault], "backup", job, {"point": result.point.id}, made=[(vault, result.point)])
        if result.stats.errors:
            doc["warning"] = f"{len(result.stats.errors)} item(s) could not be read"
        return doc

    def base_backup(
        self,
        job: JobView,
        spec: ResourceSpec,
        vault: Vault,
        tags: dict[str, str],
        rule: Rule,
        stop: threading.Event,
    ) -> dict[str, Any]:
        assert job.resource is not None
        if not spec.connection:
            raise UsageError(f"resource {job.resource}: a postgres resource needs a connection")
        span = lock_span(vault, rule.retention)
        result = base_backup(
            vault,
            job.resource,
            spec.connection,
            tags,
            progress=StopCheck(stop),
            retain_until=retain_until(vault, datetime.now(UTC), span),
        )
        self._note([vault], "backup", job, {"point": result.point.id}, made=[(vault, result.point)])
        return {
            "point": result.point.id,
            "bytes": result.bytes,
            "bytes_added": result.bytes_added,
            "duration_s": round(result.duration_s, 3),
        }

    def copy(
        self, job: JobView, policy: Policy, rule: Rule, stop: threading.Event
    ) -> dict[str, Any]:
        assert job.resource is not None and job.target is not None
        src = self.keys.open(policy, job.vault)
        dst = self.keys.open(policy, job.target)
        keep = keep_for(rule, job.target)
        now = datetime.now(UTC)
        # Everything of the resource the target should still hold and lacks,
        # not only the newest: a copy that failed before is caught up here.
        wanted = [p.id for p in src.points(job.resource) if keep == FOREVER or now - p.time <= keep]
        if not wanted:
            return {"copied": [], "skipped": 0}
        result = copy_points(
            src, dst, point_ids=wanted, progress=StopCheck(stop), retain=lock_span(dst, keep)
        )
        # What landed is recorded even when a damaged point stopped the rest.
        made = [(dst, dst.load_point(copy_id)) for _, copy_id in result.copied]
        if made:
            details = {"from": job.vault, "to": job.target, "copied": len(made)}
            self._note([dst], "copy", job, details, made=made)
        if result.damaged:
            raise DamageError(
                f"{len(result.damaged)} point(s) of {job.resource} are damaged in "
                f"{job.vault} and were not copied: {result.damaged[0][1]}"
            )
        return result.to_json()

    def retention(
        self, job: JobView, policy: Policy, rule: Rule, stop: threading.Event
    ) -> dict[str, Any]:
        vault = self.keys.open(policy, job.vault)
        keep = keep_for(rule, job.vault)
        tag = rule_tag(job.plan, job.rule)
        doc: dict[str, Any] = {"forgotten": [], "kept": []}
        if rule.lifecycle is not None and job.vault == rule.vault:
            doc["lifecycle"] = self._lifecycle(policy, job, rule, vault, stop)
        now = datetime.now(UTC)
        forgot: list[str] = []
        with VaultLock(vault.backend, LockKind.EXCLUSIVE, "retention"):
            held = holds(vault, strict=True)
            mine = [p for p in vault.points() if p.tags.get(RULE_TAG) == tag]
            for resource in sorted({p.resource for p in mine}):
                group = {p.id: p for p in mine if p.resource == resource}
                for point_id in expired({i: p.time for i, p in group.items()}, keep, now):
                    why = blocker(vault, group[point_id], held, now, bypass=False)
                    if why is not None:
                        doc["kept"].append({"point": point_id, "reason": why})
                        continue
                    vault.forget_point(point_id)
                    forgot.append(point_id)
            doc["forgotten"] = forgot
            if forgot:
                details = {"vault": job.vault, "forgotten": forgot}
                self._note([vault], "forget", job, details, forgot=[(vault, forgot)])
                # Stopped: the points are forgotten and recorded; the next
                # run's prune frees their data.
                if not stop.is_set():
                    vault.reload_index()
                    pruning = plan_prune(vault)
                    run_prune(vault, pruning)
                    doc["prune"] = pruning.to_json()
        return doc

    def _lifecycle(
        self, policy: Policy, job: JobView, rule: Rule, hot: Vault, stop: threading.Event
    ) -> dict[str, Any]:
        assert rule.lifecycle is not None
        spec = rule.lifecycle
        cold = self.keys.open(policy, spec.cold_vault) if spec.cold_vault else None
        rules = LifecycleRules(cold_after=spec.cold_after, delete_after=spec.delete_after)
        now = datetime.now(UTC)
        docs: dict[str, Any] = {}
        for resource in resources_of(policy, job.plan):
            plan = plan_lifecycle(hot, cold, rules, now, resource)
            if plan.move or plan.delete:
                run_lifecycle(hot, cold, plan, StopCheck(stop))
                docs[resource] = plan.to_json(dry_run=False)
                details = {
                    "resource": resource,
                    "moved": len(plan.moved),
                    "deleted": len(plan.delete),
                    "kept": len(plan.kept),
                }
                touched = [hot] + ([cold] if cold is not None else [])
                made = [(cold, cold.load_point(c)) for c in plan.moved.values()] if cold else []
                self._note(touched, "lifecycle", job, details, made=made)
        return docs

    def _note(
        self,
        vaults: list[Vault],
        action: str,
        job: JobView,
        details: dict[str, Any],
        made: list[tuple[Vault, Any]] | None = None,
        forgot: list[tuple[Vault, list[str]]] | None = None,
    ) -> None:
        details = {"job": job.id, "rule": f"{job.plan}/{job.rule}", **details}
        subject = job.resource or job.vault
        warning = trail.note(
            self.catalog, vaults, action, subject, details, made or (), forgot or ()
        )
        if warning is not None:
            log.warning("job %s: %s", job.id, warning)
