"""`reprieve drill run | list | show | report`: prove recovery, and keep the proof."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from reprieve.cli.common import (
    catalog_option,
    emit,
    human_bytes,
    json_option,
    progress_for,
    read_secret,
    secret_options,
)
from reprieve.drills.model import Drill, Scenario
from reprieve.errors import DamageFound, DrillFailed, UsageError, VaultNotFound, WrongKeyError

SCENARIOS = [s.value for s in Scenario if s is not Scenario.FAILOVER]


@click.group()
def drill() -> None:
    """DR drills: restore into a sandbox, verify, measure RTO and RPO."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the sandbox is torn down on the way out


@drill.command("run")
@click.option("--resource", help="The resource to drill.")
@click.option("--tenant", help="Every resource of this tenant, as one exercise.")
@click.option(
    "--scenario",
    type=click.Choice(SCENARIOS),
    help="What disaster to rehearse (default: files loss or database failure).",
)
@click.option("--from-vault", metavar="LOCATION", help="Restore from this vault only.")
@click.option("--vault", "vault_location", metavar="LOCATION", help="The resource's vault.")
@click.option("--tier", help="Hold the drill to this tier's RTO and RPO.")
@click.option("--at", "at_text", metavar="TIME", help="data-corruption: when the damage came.")
@secret_options
@catalog_option
@json_option
def drill_run(
    resource: str | None,
    tenant: str | None,
    scenario: str | None,
    from_vault: str | None,
    vault_location: str | None,
    tier: str | None,
    at_text: str | None,
    password_file: Path | None,
    key_file: Path | None,
    catalog_url: str | None,
    as_json: bool,
) -> None:
    """Restore into a sandbox, verify, measure, tear down, and record."""
    from reprieve.catalog import policies
    from reprieve.catalog.db import open_catalog
    from reprieve.drills import subjects
    from reprieve.drills.run import INTERRUPTED, Request, run_drill
    from reprieve.sources.pg_recover import parse_time

    if (resource is None) == (tenant is None):
        raise UsageError("give --resource or --tenant")
    at = parse_time(at_text) if at_text else None
    if at is not None and scenario not in (None, Scenario.DATA_CORRUPTION.value):
        raise UsageError("--at belongs to --scenario data-corruption")
    chosen = Scenario(scenario) if scenario else None
    if at is not None:
        chosen = Scenario.DATA_CORRUPTION
    with open_catalog(catalog_url) as catalog:
        found = policies.current(catalog)
        policy = found[1] if found else None
        if tenant is not None:
            if policy is None:
                raise UsageError("a tenant drill needs a policy in force (`policy apply`)")
            names = subjects.of_tenant(policy, tenant)
            drilled = [subjects.from_policy(policy, n, vault_location, tier) for n in names]
            subject = f"tenant:{tenant}"
        else:
            assert resource is not None
            if policy is not None and resource in policy.resources:
                drilled = [subjects.from_policy(policy, resource, vault_location, tier)]
            else:
                drilled = [subjects.alone(policy, resource, vault_location, tier)]
            subject = resource
        if chosen is None:
            kinds = {s.kind for s in drilled}
            chosen = Scenario.DATABASE_FAILURE if kinds == {"postgres"} else Scenario.FILES_LOSS
        request = Request(drilled, chosen, subject, tenant, at, from_vault)
        open_vault = subjects.opener(policy, lambda: read_secret(password_file, key_file))
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            done = run_drill(
                request, open_vault, progress_for(as_json, "restore"), _announcer(as_json)
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
        warning = _save(catalog, done)
    if warning:
        click.echo(f"reprieve: warning: {warning}", err=True)
    if done.failure == INTERRUPTED:
        raise click.exceptions.Abort
    emit(as_json, done.to_json(), lambda: _print_drill(done))
    if isinstance(done.error, WrongKeyError | VaultNotFound):
        # Recorded as a failed drill, and exited with the code these always have.
        raise done.error
    if not done.passed:
        raise DrillFailed(f"drill {done.id} failed: {done.reasons()[0]}")


def _announcer(as_json: bool) -> Any:
    def announce(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    return announce


def _save(catalog: Any, done: Drill) -> str | None:
    from reprieve.drills import store

    try:
        store.save(catalog, done)
    except Exception as exc:  # the drill ran: a catalog fault must not hide its outcome
        return f"drill not recorded in the catalog: {exc}"
    return None


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}s"
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.1f}m"


def _print_drill(done: Drill) -> None:
    verdict = "PASSED" if done.passed else "FAILED"
    click.echo(f"drill {done.id}: {verdict}  ({done.scenario}, {done.subject})")
    click.echo(
        f"  RTO {_secs(done.rto_s)} (target {_secs(done.rto_target_s)})   "
        f"RPO {_secs(done.rpo_s)} (target {_secs(done.rpo_target_s)})"
    )
    for part in done.recovered:
        click.echo(
            f"  {part.resource}: point {part.point[:12]} from {part.vault}, "
            f"{human_bytes(part.bytes_read)} in {_secs(part.restore_s)}"
        )
    for step in done.steps:
        mark = "ok  " if step.ok else "FAIL"
        click.echo(f"  {mark} {step.at_s:7.2f}s +{step.duration_s:6.2f}s  {step.name}")
    for check in done.checks:
        mark = "pass" if check.passed else "FAIL"
        click.echo(f"  {mark} {check.name}: {check.detail}")
    for reason in done.reasons():
        click.echo(f"  why: {reason}")
    if done.teardown:
        click.echo(f"  teardown: {done.teardown}")


@drill.command("list")
@click.option("--resource", help="Only drills of this resource.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@catalog_option
@json_option
def drill_list(resource: str | None, limit: int, catalog_url: str | None, as_json: bool) -> None:
    """Drills and runbook runs, newest first."""
    from reprieve.catalog.db import open_catalog
    from reprieve.drills import store

    with open_catalog(catalog_url) as catalog:
        rows = store.records(catalog, resource, limit)
    docs: list[dict[str, Any]] = [
        {
            "drill": r.id,
            "kind": r.kind,
            "scenario": r.scenario,
            "subject": r.subject,
            "tier": r.tier,
            "started_at": store.started(r).isoformat(timespec="seconds"),
            "passed": r.passed,
            "rto_s": r.rto_s,
            "rto_target_s": r.rto_target_s,
            "rpo_s": r.rpo_s,
            "rpo_target_s": r.rpo_target_s,
        }
        for r in rows
    ]

    def human() -> None:
        click.echo(f"{'DRILL':<28} {'STARTED':<20} {'SUBJECT':<18} {'SCENARIO':<24} RESULT")
        for d in docs:
            result = "passed" if d["passed"] else "FAILED"
            click.echo(
                f"{d['drill']:<28} {d['started_at'][:19]:<20} {d['subject']:<18} "
                f"{d['scenario']:<24} {result}  RTO {_secs(d['rto_s'])}/"
                f"{_secs(d['rto_target_s'])}  RPO {_secs(d['rpo_s'])}/{_secs(d['rpo_target_s'])}"
            )

    emit(as_json, docs, human)


@drill.command("show")
@click.argument("drill_id", metavar="DRILL")
@catalog_option
@json_option
def drill_show(drill_id: str, catalog_url: str | None, as_json: bool) -> None:
    """One drill: its steps, checks, and measures."""
    from reprieve.catalog.db import open_catalog
    from reprieve.drills import store

    with open_catalog(catalog_url) as catalog:
        done = store.load(catalog, drill_id)
    emit(as_json, done.to_json(), lambda: _print_drill(done))


@drill.command("report")
@click.argument("drill_id", metavar="DRILL")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON (default: beside the HTML, .json).",
)
@click.option(
    "--verify",
    "verify_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Check a report file against the digest in the audit trail.",
)
@catalog_option
@json_option
def drill_report(
    drill_id: str,
    html_path: Path | None,
    json_out: Path | None,
    verify_path: Path | None,
    catalog_url: str | None,
    as_json: bool,
) -> None:
    """Write a self-contained HTML report (and JSON); its digest goes in the audit trail."""
    import json

    from reprieve.catalog.db import open_catalog
    from reprieve.drills import store
    from reprieve.drills.report import file_digest, render_html, report_json

    if (html_path is None) == (verify_path is None):
        raise UsageError("give --html FILE to write a report, or --verify FILE to check one")
    with open_catalog(catalog_url) as catalog:
        done = store.load(catalog, drill_id)
        if verify_path is not None:
            digest = file_digest(verify_path.read_bytes())
            recorded = store.report_digests(catalog, done.id)
            if not recorded:
                raise UsageError(f"no report of drill {done.id} was recorded")
            if digest not in recorded:
                raise DamageFound(
                    f"{verify_path} is not a report recorded for drill {done.id}: its "
                    f"sha256 {digest[:16]}… is not in the audit trail; it was edited"
                )
            emit(
                as_json,
                {"drill": done.id, "file": str(verify_path), "sha256": digest, "matches": True},
                lambda: click.echo(f"{verify_path}: matches the report recorded for {done.id}"),
            )
            return
        assert html_path is not None
        now = datetime.now(UTC)
        doc = done.to_json()
        page = render_html(doc, now).encode()
        json_path = json_out or html_path.with_suffix(".json")
        body = json.dumps(report_json(doc, now), indent=2, sort_keys=True).encode()
        try:
            html_path.write_bytes(page)
            json_path.write_bytes(body)
        except OSError as exc:
            raise UsageError(f"cannot write the report: {exc}") from exc
        digest = file_digest(page)
        event = store.note_report(
            catalog, done.id, digest, str(html_path.absolute()), file_digest(body)
        )
    out = {
        "drill": done.id,
        "html": str(html_path),
        "json": str(json_path),
        "sha256": digest,
        "json_sha256": file_digest(body),
        "audit_seq": event.seq,
    }
    emit(
        as_json,
        out,
        lambda: click.echo(
            f"wrote {html_path} and {json_path}; sha256 {digest} recorded as audit event "
            f"{event.seq}"
        ),
    )
