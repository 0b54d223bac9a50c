"""What ``reprieve server`` exports on /metrics (the contract the alert rules
in ``deploy/prometheus/alerts.yaml`` and the Grafana dashboard read).

Job counts and durations are this process's own (Prometheus sums them over
servers). RPO, replication lag, and last success are read from the catalog
at each scrape, so every server reports the same picture; vault sizes are
refreshed by the server every few minutes (listing a bucket is not free).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from reprieve.catalog.db import Catalog, as_utc
from reprieve.catalog.models import Job
from reprieve.catalog.points import vault_key
from reprieve.drills.standing import Standing, standings
from reprieve.policy.model import Policy
from reprieve.scheduler.queue import JobView
from reprieve.scheduler.status import replication_lag, status, vaults_of

log = logging.getLogger("reprieve.scheduler")

JOB_LABELS = ("kind", "status", "tier", "tenant")
# Seconds: a small file backup to a day-long copy.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)

PolicySource = Callable[[], tuple[datetime, Policy] | None]


class Metrics:
    def __init__(self, catalog: Catalog, policy: PolicySource, clock: Callable[[], datetime]):
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "reprieve_jobs", "Jobs finished, by outcome.", JOB_LABELS, registry=self.registry
        )
        self.duration = Histogram(
            "reprieve_job_duration_seconds",
            "How long jobs ran.",
            JOB_LABELS,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.up = Gauge(
            "reprieve_up", "1 while the scheduler reaches its catalog.", registry=self.registry
        )
        self.vault_bytes: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.registry.register(_CatalogCollector(catalog, policy, clock, self))

    def job_finished(self, job: JobView) -> None:
        # A failed attempt that will be retried counts as failed: alerts
        # watch failures, and the retry counts again when it ends.
        state = "failed" if job.state == "pending" else job.state
        labels = (job.kind, state, job.tier or "", job.tenant or "")
        self.jobs.labels(*labels).inc()
        if job.duration_s is not None:
            self.duration.labels(*labels).observe(job.duration_s)

    def set_vault_bytes(self, sizes: dict[tuple[str, str], int]) -> None:
        with self._lock:
            self.vault_bytes = dict(sizes)


class _CatalogCollector(Collector):
    def __init__(
        self,
        catalog: Catalog,
        policy: PolicySource,
        clock: Callable[[], datetime],
        metrics: Metrics,
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.clock = clock
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception:  # a scrape must answer even when the catalog does not
            log.exception("metrics: reading the catalog failed")
            self.metrics.up.set(0)

    def _collect(self) -> Iterator[Metric]:
        res_labels = ["resource", "tenant", "tier"]
        rpo = GaugeMetricFamily(
            "reprieve_rpo_seconds",
            "Age of the newest restorable point, per region.",
            labels=[*res_labels, "region"],
        )
        rpo_target = GaugeMetricFamily(
            "reprieve_rpo_target_seconds", "The tier's RPO.", labels=res_labels
        )
        rto_target = GaugeMetricFamily(
            "reprieve_rto_target_seconds", "The tier's RTO.", labels=res_labels
        )
        last = GaugeMetricFamily(
            "reprieve_last_success_timestamp_seconds",
            "When the last job of this kind succeeded for the resource.",
            labels=[*res_labels, "kind"],
        )
        pair = ["source", "target", "tier"]
        lag = GaugeMetricFamily(
            "reprieve_replication_lag_seconds",
            "How long the target vault has lacked a point the source holds.",
            labels=pair,
        )
        lag_target = GaugeMetricFamily(
            "reprieve_replication_lag_target_seconds",
            "The most replication lag the tier allows (its RPO).",
            labels=pair,
        )
        drill_families = {
            name: GaugeMetricFamily(f"reprieve_{name}", text, labels=res_labels)
            for name, text in (
                ("drill_last_timestamp_seconds", "When the resource's last drill started."),
                ("drill_passed", "1 when the resource's last drill passed, else 0."),
                ("drill_rto_seconds", "The RTO the last drill measured."),
                ("drill_rpo_seconds", "The RPO the last drill measured."),
                ("drill_due_timestamp_seconds", "When the next drill is due (tier frequency)."),
                ("rto_predicted_seconds", "Predicted restore time from past drills' speed."),
            )
        }
        sizes = GaugeMetricFamily(
            "reprieve_vault_bytes", "Bytes stored per vault.", labels=["vault", "storage_class"]
        )
        with self.metrics._lock:
            for (vault, storage_class), size in sorted(self.metrics.vault_bytes.items()):
                sizes.add_metric([vault, storage_class], size)
        yield sizes
        found = self.policy()
        if found is None:
            return
        since, policy = found
        now = self.clock()
        lags: dict[tuple[str, str, str], float] = {}
        with self.catalog.session() as session:
            rows = status(session, policy, since, now)
            successes = session.execute(
                select(Job.resource, Job.kind, func.max(Job.finished_at))
                .where(Job.state == "succeeded", Job.resource.is_not(None))
                .group_by(Job.resource, Job.kind)
            )
            for row in rows:
                primary, dr = vaults_of(policy, row.resource)
                for source in primary:
                    for target in dr:
                        behind, _ = replication_lag(
                            session,
                            row.resource,
                            [vault_key(policy.vaults[source].url)],
                            [vault_key(policy.vaults[target].url)],
                            since,
                            now,
                        )
                        key = (source, target, row.tier)
                        lags[key] = max(lags.get(key, 0.0), behind)
            drilled = standings(session, policy, since, now)
            by_resource = {r.resource: r for r in rows}
            for resource, kind, at in successes:
                known = by_resource.get(resource or "")
                if known is not None and at is not None:
                    labels = [known.resource, known.tenant, known.tier, kind]
                    last.add_metric(labels, as_utc(at).timestamp())
        for row in rows:
            labels = [row.resource, row.tenant, row.tier]
            rpo.add_metric([*labels, "primary"], row.rpo_s)
            if row.dr_rpo_s is not None:
                rpo.add_metric([*labels, "dr"], row.dr_rpo_s)
            rpo_target.add_metric(labels, row.rpo_target_s)
            rto_target.add_metric(labels, row.rto_target_s)
            if row.resource in drilled:
                _add_drill(drill_families, labels, drilled[row.resource])
        for (source, target, tier), behind in sorted(lags.items()):
            lag.add_metric([source, target, tier], behind)
            lag_target.add_metric([source, target, tier], policy.tiers[tier].rpo.total_seconds())
        self.metrics.up.set(1)
        yield from (rpo, rpo_target, rto_target, last, lag, lag_target)
        yield from drill_families.values()


def _add_drill(families: dict[str, GaugeMetricFamily], labels: list[str], d: Standing) -> None:
    families["drill_due_timestamp_seconds"].add_metric(labels, d.due.timestamp())
    if d.predicted_rto_s is not None:
        families["rto_predicted_seconds"].add_metric(labels, d.predicted_rto_s)
    if d.last_drill is None:
        return
    families["drill_last_timestamp_seconds"].add_metric(labels, d.last_drill.timestamp())
    families["drill_passed"].add_metric(labels, 1.0 if d.passed else 0.0)
    if d.rto_s is not None:
        families["drill_rto_seconds"].add_metric(labels, d.rto_s)
    if d.rpo_s is not None:
        families["drill_rpo_seconds"].add_metric(labels, d.rpo_s)
