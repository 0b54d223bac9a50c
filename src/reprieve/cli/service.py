"""The service commands: `run --once`, `server`, `status`, and `jobs`.

They read the policy in force from the catalog (`reprieve policy apply`);
the catalog and scheduler are imported inside the commands, so other
commands start without them.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from typing import Any

import click

from reprieve.cli.common import catalog_option, emit, json_option
from reprieve.errors import ReprieveError, UsageError


def _limits(jobs: int, per_vault: int) -> Any:
    from reprieve.scheduler.queue import Limits

    return Limits(jobs=jobs, per_vault=per_vault)


def limit_options(func: Any) -> Any:
    func = click.option(
        "--per-vault",
        type=click.IntRange(min=1),
        default=2,
        show_default=True,
        help="Most jobs at once on one vault (over every server).",
    )(func)
    return click.option(
        "--jobs",
        type=click.IntRange(min=1),
        default=4,
        show_default=True,
        help="Most jobs this process runs at once.",
    )(func)


def _show_job(job: Any) -> str:
    when = f"{job.scheduled_for:%Y-%m-%d %H:%M}"
    what = job.resource or job.vault
    to = f" -> {job.target}" if job.target and job.kind == "copy" else ""
    error = f"  {job.error}" if job.error else ""
    return f"{job.id:>6}  {when}  {job.kind:<9} {what}{to}  {job.state}{error}"


def _echo_jobs(found: list[Any]) -> None:
    for job in found:
        click.echo(_show_job(job))


@click.command()
@click.option("--once", is_flag=True, help="Run every job due now, then exit (for cron).")
@limit_options
@catalog_option
@json_option
def run(once: bool, jobs: int, per_vault: int, catalog_url: str | None, as_json: bool) -> None:
    """Run the jobs the policy in force says are due."""
    from reprieve.catalog.db import open_catalog
    from reprieve.scheduler.execute import VaultExecutor
    from reprieve.scheduler.runner import Scheduler
    from reprieve.scheduler.server import worker_name

    if not once:
        raise UsageError("give --once (or run `reprieve server` to keep running)")
    with open_catalog(catalog_url) as catalog:
        scheduler = Scheduler(
            catalog, VaultExecutor(catalog), worker_name(), limits=_limits(jobs, per_vault)
        )
        if scheduler.policy() is None:
            raise UsageError("no policy in force; run `reprieve policy apply FILE` first")
        ended = scheduler.run_once()
    emit(as_json, [j.to_json() for j in ended], lambda: _echo_jobs(ended))
    failed = [j for j in ended if j.state not in ("succeeded", "cancelled")]
    if failed:
        raise ReprieveError(
            f"{len(failed)} job(s) did not succeed; first: job {failed[0].id}: {failed[0].error}"
        )


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:9180",
    show_default=True,
    metavar="HOST:PORT",
    help="Where /metrics and /healthz answer.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between looks for due jobs.",
)
@limit_options
@catalog_option
def server(listen: str, poll: float, jobs: int, per_vault: int, catalog_url: str | None) -> None:
    """Run the scheduler, /metrics and /healthz until stopped (SIGTERM or Ctrl-C)."""
    from reprieve.catalog.db import open_catalog
    from reprieve.scheduler.server import parse_listen, serve

    address = parse_listen(listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s reprieve %(levelname)s %(message)s")
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open_catalog(catalog_url) as catalog:
        serve(catalog, address, _limits(jobs, per_vault), stopped, poll)


@click.command()
@click.option("--tenant", help="Only this tenant's resources.")
@catalog_option
@json_option
def status(tenant: str | None, catalog_url: str | None, as_json: bool) -> None:
    """Each resource against its tier's RPO: ok, at_risk (past 80%), or breached."""
    from reprieve.catalog import policies
    from reprieve.catalog.db import as_utc, open_catalog
    from reprieve.drills.standing import standings
    from reprieve.scheduler.status import status as measure

    with open_catalog(catalog_url) as catalog:
        found = policies.current(catalog)
        if found is None:
            raise UsageError("no policy in force; run `reprieve policy apply FILE` first")
        row, policy = found
        if tenant is not None and tenant not in policy.tenants:
            raise UsageError(f"no tenant {tenant!r} in the policy in force")
        now = datetime.now(UTC)
        with catalog.session() as session:
            rows = measure(session, policy, as_utc(row.applied_at), now, tenant)
            drilled = standings(session, policy, as_utc(row.applied_at), now)
    from reprieve.sources.pg_standby import standbys

    # Warm standbys on this machine: how far their replay trails the vault.
    following = {s["resource"]: s for s in standbys() if s.get("state") != "promoted"}
    docs = []
    for r in rows:
        doc = r.to_json()
        standby = following.get(r.resource)
        doc["standby_lag_s"] = standby.get("lag_s") if standby else None
        doc["standby_state"] = standby.get("state") if standby else None
        if r.resource in drilled:
            doc.update(drilled[r.resource].to_json())
        docs.append(doc)

    def human() -> None:
        click.echo(
            f"{'RESOURCE':<20} {'TENANT':<12} {'TIER':<9} {'RPO':>8} {'TARGET':>8} "
            f"{'LAG':>8}  {'STATE':<9} {'LAST DRILL':<17} {'RTO':>7} {'RPO':>7} {'PREDICTED':>9}"
        )
        for r in rows:
            lag = _secs(r.replication_lag_s) if r.replication_lag_s is not None else "-"
            d = drilled.get(r.resource)
            if d is None:
                drill = "-"
            elif d.last_drill is None:
                drill = "never"
            else:
                drill = f"{d.last_drill:%Y-%m-%d} {'passed' if d.passed else 'FAILED'}"
            drill += " (overdue)" if d and d.overdue else ""
            rto = _secs(d.rto_s) if d and d.rto_s is not None else "-"
            rpo = _secs(d.rpo_s) if d and d.rpo_s is not None else "-"
            predicted = "-"
            if d and d.predicted_rto_s is not None:
                predicted = _secs(d.predicted_rto_s)
            click.echo(
                f"{r.resource:<20} {r.tenant:<12} {r.tier:<9} {_secs(r.rpo_s):>8} "
                f"{_secs(r.rpo_target_s):>8} {lag:>8}  {r.state:<9} {drill:<17} {rto:>7} {rpo:>7} "
                f"{predicted:>9}"
            )

        for name, standby in sorted(following.items()):
            replay = standby.get("lag_s")
            click.echo(
                f"standby of {name}: {standby.get('state')}, replay lag "
                f"{'?' if replay is None else _secs(replay)}"
            )

    emit(as_json, docs, human)
    for r in rows:
        d = drilled.get(r.resource)
        if d is not None and d.prediction_state == "breached":
            click.echo(
                f"reprieve: warning: restoring {r.resource} would take about "
                f"{_secs(d.predicted_rto_s or 0)} ({d.prediction_basis}), over its RTO of "
                f"{_secs(r.rto_target_s)}",
                err=True,
            )


def _secs(value: float) -> str:
    whole = int(value)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m"
    return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"


@click.group()
def jobs() -> None:
    """Scheduled jobs: what ran, what waits, what was missed."""


@jobs.command("list")
@click.option(
    "--state",
    type=click.Choice(["pending", "running", "succeeded", "failed", "missed", "cancelled"]),
    help="Only jobs in this state.",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@catalog_option
@json_option
def list_jobs(state: str | None, limit: int, catalog_url: str | None, as_json: bool) -> None:
    """Newest first."""
    from reprieve.catalog.db import open_catalog
    from reprieve.scheduler import queue

    with open_catalog(catalog_url) as catalog, catalog.session() as session:
        found = queue.listing(session, limit, state)
    emit(as_json, [j.to_json() for j in found], lambda: _echo_jobs(found))


@jobs.command()
@click.argument("job_id", type=int, metavar="JOB")
@catalog_option
@json_option
def show(job_id: int, catalog_url: str | None, as_json: bool) -> None:
    """One job in full, with its result."""
    import json

    from reprieve.catalog.db import open_catalog
    from reprieve.scheduler import queue

    with open_catalog(catalog_url) as catalog, catalog.session() as session:
        job = queue.get(session, job_id)
    doc = job.to_json()
    emit(as_json, doc, lambda: click.echo(json.dumps(doc, indent=2, default=str)))


@jobs.command()
@click.argument("job_id", type=int, metavar="JOB")
@catalog_option
@json_option
def cancel(job_id: int, catalog_url: str | None, as_json: bool) -> None:
    """Cancel a waiting job; a running one is stopped by its server within seconds."""
    from reprieve.catalog import audit
    from reprieve.catalog.db import open_catalog
    from reprieve.scheduler import queue

    with open_catalog(catalog_url) as catalog:
        who = audit.actor()

        def work(session: Any) -> Any:
            job = queue.cancel(session, job_id, datetime.now(UTC))
            audit.append(session, "job.cancel", str(job_id), {"state": job.state}, who)
            return job

        job = audit.in_transaction(catalog, work)
    line = f"job {job.id} " + (
        "cancelled" if job.state == "cancelled" else "asked to stop; its server stops it"
    )
    emit(as_json, job.to_json(), lambda: click.echo(line))
