"""`reprieve runbook plan|run`: failover and failback runbooks.

``run`` without ``--execute`` prints the plan and changes nothing (exit 0).
A run that stops at a failed, refused, or interrupted step prints the state
of things (what completed and changed, what failed, what did not run, how to
resume, what undoing each change means) and exits 8 (DrillFailed) with one
line on stderr naming the step and the command that resumes it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from reprieve.cli.common import catalog_option, emit, json_option
from reprieve.errors import DrillFailed
from reprieve.policy.model import show_duration
from reprieve.runbooks import engine
from reprieve.runbooks.engine import PlannedStep, RunbookRun, RunStatus, StepResult, StepStatus
from reprieve.runbooks.loader import load_runbook
from reprieve.runbooks.model import GroupSpec, Runbook
from reprieve.runbooks.steps import seconds

runbook_file = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
MARKS = {
    StepStatus.DONE: "ok",
    StepStatus.FAILED: "FAILED",
    StepStatus.NOT_RUN: "not run",
    StepStatus.SKIPPED: "skipped",
    StepStatus.RUNNING: "running",
    StepStatus.PLANNED: "planned",
}


@click.group()
def runbook() -> None:
    """Plan and run failover and failback runbooks."""


def _ask() -> Callable[[str], bool] | None:
    """A yes/no question on the terminal; None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None

    def ask(prompt: str) -> bool:
        try:
            return click.confirm(prompt, default=False, err=True)
        except click.Abort:  # Ctrl-D or Ctrl-C at the prompt is a no
            return False

    return ask


def _targets(book: Runbook) -> str:
    parts = []
    if book.rto_target is not None:
        parts.append(f"RTO {show_duration(book.rto_target)}")
    if book.rpo_target is not None:
        parts.append(f"RPO {show_duration(book.rpo_target)}")
    tier = f" (tier {book.tier})" if book.tier else ""
    return f"targets: {', '.join(parts)}{tier}" if parts else ""


def _header(book: Runbook) -> None:
    about = f": {book.description}" if book.description else ""
    click.echo(f"runbook {book.name}{about}")
    if targets := _targets(book):
        click.echo(targets)


def _group_line(book: Runbook, label: str) -> str | None:
    """The group's own line, printed before its first step."""
    top, _, sub = label.partition(".")
    item = book.steps[int(top) - 1]
    if sub == "1" and isinstance(item, GroupSpec):
        count = len(item.steps)
        return f"  {top:<5} {item.group} (group: {count} step{'s' * (count != 1)} in parallel)"
    return None


def _limits(step: PlannedStep) -> str:
    parts = []
    if step.timeout_s is not None:
        parts.append(f"timeout {seconds(step.timeout_s)}")
    if step.retries:
        retries = f"{step.retries} {'retry' if step.retries == 1 else 'retries'}"
        parts.append(f"{retries} {seconds(step.retry_delay_s)} apart")
    return f"  ({', '.join(parts)})" if parts else ""


def print_plan(book: Runbook, steps: list[PlannedStep]) -> None:
    _header(book)
    for step in steps:
        if line := _group_line(book, step.label):
            click.echo(line)
        pad = "    " if step.group else "  "
        click.echo(f"{pad}{step.label:<5} {step.name} [{step.type}]{_limits(step)}")
        d = step.description
        rows = [("do", d.action), ("now", d.now), ("change", d.change), ("PROBLEM", d.problem)]
        for key, text in rows:
            if text and not (step.skipped and key != "now"):
                click.echo(f"{pad}      {key + ':':<8} {text}")
    problems = sum(1 for s in steps if s.description.problem and not s.skipped)
    click.echo(f"{problems} problem(s) found" if problems else "no problems found")


def _print_step(step: StepResult) -> None:
    """Progress while the run goes: a line when a step starts and when it ends."""
    if step.status is StepStatus.RUNNING:
        click.echo(f"-> {step.label} {step.name}")
    else:
        tries = f", {step.attempts} attempts" if step.attempts > 1 else ""
        click.echo(
            f"   {step.label} {step.name}: {MARKS[step.status]} in "
            f"{step.duration_s:.1f}s{tries}: {step.detail}"
        )


def _print_output(step: str, line: str) -> None:
    click.echo(f"      [{step}] {line}")


def print_run(book: Runbook, outcome: RunbookRun) -> None:
    width = max(len(s.name) for s in outcome.steps)
    click.echo(f"\n  {'#':<5} {'step':<{width}}  {'status':<8} {'took':>7}  detail".rstrip())
    for s in outcome.steps:
        took = f"{s.duration_s:.1f}s" if s.attempts else ""
        detail = s.detail if s.attempts else ""
        row = f"  {s.label:<5} {s.name:<{width}}  {MARKS[s.status]:<8} {took:>7}  {detail}"
        click.echo(row.rstrip())
    drill = outcome.drill
    rto = f"RTO {seconds(outcome.rto_s)}"
    if outcome.rto_target_s is not None and drill is not None:
        verdict = "met" if drill.rto_met else "MISSED"
        rto += f" (target {seconds(outcome.rto_target_s)}: {verdict})"
    rpo = ""
    if drill is not None and drill.rpo_s is not None:
        rpo = f", RPO {seconds(drill.rpo_s)}"
        if outcome.rpo_target_s is not None:
            rpo += (
                f" (target {seconds(outcome.rpo_target_s)}: {'met' if drill.rpo_met else 'MISSED'})"
            )
    click.echo(rto + rpo)
    if outcome.status is not RunStatus.SUCCEEDED:
        for s in outcome.failed:
            click.echo(f"failed: {s.label} {s.name}: {s.detail}")
        not_run = [s.name for s in outcome.steps if s.status is StepStatus.NOT_RUN]
        if not_run:
            click.echo(f"not run: {', '.join(not_run)}")
        if outcome.rollback:
            click.echo("changed so far (newest first), and what undoing it means:")
            for s in outcome.rollback:
                click.echo(f"  {s.label} {s.name}: {s.changed}")
                if s.undo:
                    click.echo(f"      undo: {s.undo}")
        click.echo(f"resume: {outcome.resume}")
    if drill is not None and outcome.record_warning is None:
        click.echo(f"recorded as {drill.id}")
    if outcome.status is RunStatus.SUCCEEDED:
        click.echo(outcome.summary())


@runbook.command("plan")
@runbook_file
@json_option
def plan_command(file: Path, as_json: bool) -> None:
    """Show what each step would do against what exists now; change nothing."""
    book = load_runbook(file)
    steps = engine.plan(book, engine.new_state(book, ask=_ask()))
    doc = {
        "runbook": book.name,
        "file": str(file),
        "description": book.description,
        "tier": book.tier,
        "rto_target_s": book.rto_target.total_seconds() if book.rto_target else None,
        "rpo_target_s": book.rpo_target.total_seconds() if book.rpo_target else None,
        "steps": [s.to_json() for s in steps],
        "problems": sum(1 for s in steps if s.description.problem),
    }
    emit(as_json, doc, lambda: print_plan(book, steps))


@runbook.command("run")
@runbook_file
@click.option("--execute", is_flag=True, help="Run the steps (without it: a dry run).")
@click.option("--yes", is_flag=True, help="Approve every approval step in advance.")
@click.option(
    "--from", "resume_from", metavar="STEP", help="Start at this step or group (to resume)."
)
@json_option
@catalog_option
def run_command(
    file: Path,
    execute: bool,
    yes: bool,
    resume_from: str | None,
    as_json: bool,
    catalog_url: str | None,
) -> None:
    """Run a runbook's steps in order and record the run (dry run without --execute)."""
    book = load_runbook(file)
    if resume_from is not None:
        book.item_of(resume_from)  # an unknown step is a usage error before anything runs
    quiet = as_json or not execute
    outcome = engine.run(
        book,
        str(file),
        execute=execute,
        yes=yes,
        resume_from=resume_from,
        on_step=None if quiet else _print_step,
        ask=_ask(),
        output=None if quiet else _print_output,
        catalog_url=catalog_url,
    )
    if outcome.record_warning is not None:
        click.echo(f"reprieve: warning: {outcome.record_warning}", err=True)

    def human() -> None:
        if outcome.status is RunStatus.DRY_RUN:
            print_plan(book, outcome.plan)
            click.echo(outcome.summary())
        else:
            print_run(book, outcome)

    emit(as_json, outcome.to_json(), human)
    if outcome.status not in (RunStatus.SUCCEEDED, RunStatus.DRY_RUN):
        raise DrillFailed(outcome.summary())
