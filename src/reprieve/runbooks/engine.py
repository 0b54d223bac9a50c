"""Plan and run a runbook, and record the run like a drill.

:func:`plan` describes every step against what exists now and changes
nothing. :func:`run` without ``execute`` is that plan (a dry run); with it,
the steps run in order, a group's steps in parallel (the group fails if any
of them fails, after all of them have finished), each one timed, each
attempt bounded by the step's timeout and repeated ``retries`` times,
``retry_delay`` apart. The first failure stops the run; what comes back
says which steps completed and what they changed, which failed and why,
which did not run, how to resume (``--from`` the failed step, or its group),
and what rolling back each change means. An interrupt (Ctrl-C) stops the
steps in flight (commands are killed) and is reported the same way.

The achieved RTO is the wall time of the whole run. Every executed run is
saved in the catalog as a :class:`~reprieve.drills.model.Drill` of kind
``runbook``: its timeline, its HTTP checks with their evidence, what it
restored (with the RPO of each restore), and the targets of its tier. A
catalog that cannot take the record costs a warning, never the outcome.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from reprieve.drills.model import Check, Drill, DrillKind, Recovered, Step, new_id
from reprieve.errors import ReprieveError
from reprieve.runbooks.model import GroupSpec, Runbook, StepSpec, StepType
from reprieve.runbooks.restore import VaultCache
from reprieve.runbooks.steps import (
    Attempt,
    Description,
    RunState,
    StepFailure,
    StepRefused,
    kind_for,
    seconds,
)


class StepStatus(StrEnum):
    PLANNED = "planned"
    SKIPPED = "skipped"  # before --from
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    NOT_RUN = "not run"


class RunStatus(StrEnum):
    DRY_RUN = "dry-run"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"  # an approval was refused
    INTERRUPTED = "interrupted"


@dataclass
class PlannedStep:
    label: str  # "3", or "4.2" for the second step of the group at 4
    name: str
    type: StepType
    group: str | None
    description: Description
    timeout_s: float | None
    retries: int
    retry_delay_s: float
    skipped: bool = False
    resource: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "type": self.type.value,
            "group": self.group,
            "skipped": self.skipped,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "retry_delay_s": self.retry_delay_s,
            **self.description.to_json(),
        }


@dataclass
class StepResult:
    label: str
    name: str
    type: StepType
    group: str | None
    resource: str | None
    status: StepStatus
    at_s: float = 0.0
    duration_s: float = 0.0
    attempts: int = 0
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    changed: str | None = None
    undo: str | None = None
    recovered: Recovered | None = None
    verifies: bool = False  # an HTTP check: recorded as a check, with its evidence
    refused: bool = False  # an approval answered no

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "type": self.type.value,
            "group": self.group,
            "resource": self.resource,
            "status": self.status.value,
            "at_s": round(self.at_s, 3),
            "duration_s": round(self.duration_s, 3),
            "attempts": self.attempts,
            "detail": self.detail,
            "evidence": self.evidence,
            "changed": self.changed,
            "undo": self.undo,
        }


@dataclass
class RunbookRun:
    runbook: str
    source: str
    status: RunStatus
    started_at: datetime
    steps: list[StepResult] = field(default_factory=list)
    plan: list[PlannedStep] = field(default_factory=list)
    finished_at: datetime | None = None
    rto_s: float | None = None
    rto_target_s: float | None = None
    rpo_target_s: float | None = None
    stopped_at: str | None = None  # the item (step or group) the run stopped at
    drill: Drill | None = None
    record_warning: str | None = None

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status is StepStatus.FAILED]

    @property
    def resume(self) -> str | None:
        if self.stopped_at is None:
            return None
        return (
            f"reprieve runbook run {shlex.quote(self.source)} --execute "
            f"--from {shlex.quote(self.stopped_at)}"
        )

    @property
    def rollback(self) -> list[StepResult]:
        """Completed steps that changed something, newest first (the order to undo them)."""
        done = [s for s in self.steps if s.status is StepStatus.DONE and s.changed]
        return sorted(done, key=lambda s: s.at_s + s.duration_s, reverse=True)

    def summary(self) -> str:
        """One line: the outcome, and on a stop, where and how to go on."""
        if self.status is RunStatus.SUCCEEDED:
            return f"runbook {self.runbook} completed in {seconds(self.rto_s)}"
        if self.status is RunStatus.DRY_RUN:
            return f"runbook {self.runbook}: dry run, nothing changed; add --execute to run it"
        first = self.failed[0] if self.failed else None
        why = f" {first.label} {first.name!r}: {first.detail}" if first else ""
        verb = {RunStatus.REFUSED: "was refused at", RunStatus.INTERRUPTED: "interrupted at"}
        return (
            f"runbook {self.runbook} {verb.get(self.status, 'stopped at')} step{why}; "
            f"resume with: {self.resume}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "file": self.source,
            "status": self.status.value,
            "executed": self.status is not RunStatus.DRY_RUN,
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "finished_at": (
                self.finished_at.isoformat(timespec="milliseconds") if self.finished_at else None
            ),
            "rto_s": None if self.rto_s is None else round(self.rto_s, 3),
            "rto_target_s": self.rto_target_s,
            "rpo_target_s": self.rpo_target_s,
            "steps": [s.to_json() for s in self.steps],
            "plan": [p.to_json() for p in self.plan],
            "failed": [s.name for s in self.failed],
            "not_run": [s.name for s in self.steps if s.status is StepStatus.NOT_RUN],
            "resume": self.resume,
            "rollback": [
                {"step": s.name, "changed": s.changed, "undo": s.undo} for s in self.rollback
            ],
            "summary": self.summary(),
            "drill": self.drill.id if self.drill else None,
            "rpo_s": self.drill.rpo_s if self.drill else None,
            "record_warning": self.record_warning,
        }


OnStep = Callable[[StepResult], None]


def _flat(runbook: Runbook) -> list[tuple[int, str, StepSpec, str | None]]:
    """(item index, label, step, group name) of every step, in order."""
    out: list[tuple[int, str, StepSpec, str | None]] = []
    for i, item in enumerate(runbook.steps):
        if isinstance(item, GroupSpec):
            out += [(i, f"{i + 1}.{j + 1}", s, item.group) for j, s in enumerate(item.steps)]
        else:
            out.append((i, str(i + 1), item, None))
    return out


def _resource(step: StepSpec) -> str | None:
    if step.restore is not None:
        return step.restore.resource
    return step.standby_promote.resource if step.standby_promote is not None else None


def _timeout(step: StepSpec) -> float | None:
    return step.timeout.total_seconds() if step.timeout else kind_for(step).default_timeout


def new_state(runbook: Runbook, yes: bool = False, **kw: Any) -> RunState:
    return RunState(runbook, VaultCache(runbook.vaults), yes=yes, **kw)


def plan(
    runbook: Runbook, state: RunState | None = None, resume_from: str | None = None
) -> list[PlannedStep]:
    """Every step, described against what exists now; nothing is changed."""
    state = state or new_state(runbook)
    start = runbook.item_of(resume_from) if resume_from else 0
    planned = []
    for index, label, step, group in _flat(runbook):
        kind = kind_for(step)
        if index < start:
            description = Description(f"{step.type} step", now="skipped: it comes before --from")
        else:
            try:
                description = kind.describe(state)
            except ReprieveError as exc:
                description = Description(f"{step.type} step", problem=str(exc))
            except Exception as exc:  # a plan reports, it does not stop at the first surprise
                description = Description(
                    f"{step.type} step", problem=f"{type(exc).__name__}: {exc}"
                )
        planned.append(
            PlannedStep(
                label,
                step.name,
                step.type,
                group,
                description,
                _timeout(step),
                step.retries,
                step.retry_delay.total_seconds(),
                skipped=index < start,
                resource=_resource(step),
            )
        )
    return planned


class _Runner:
    """One execution: the shared state, the clock, and each step's result."""

    def __init__(self, state: RunState, results: dict[str, StepResult], on_step: OnStep | None):
        self.state = state
        self.results = results
        self.on_step = on_step
        self.t0 = time.monotonic()
        self._notify_lock = threading.Lock()

    def notify(self, result: StepResult) -> None:
        if self.on_step is not None:
            with self._notify_lock:
                self.on_step(result)

    def step(self, label: str, step: StepSpec) -> StepResult:
        result = self.results[label]
        kind = kind_for(step)
        timeout = _timeout(step)
        began = time.monotonic()
        result.at_s, result.status = began - self.t0, StepStatus.RUNNING
        self.notify(result)
        failure: StepFailure | None = None
        try:
            for number in range(1, step.retries + 2):
                result.attempts = number
                deadline = None if timeout is None else time.monotonic() + timeout
                try:
                    outcome = kind.run(Attempt(self.state, step, number, timeout, deadline))
                except StepFailure as exc:
                    failure = exc
                except ReprieveError as exc:
                    failure = StepFailure(str(exc))
                except Exception as exc:
                    failure = StepFailure(f"{type(exc).__name__}: {exc}")
                else:
                    failure = None
                    result.status, result.detail = StepStatus.DONE, outcome.detail
                    result.evidence = outcome.evidence
                    result.changed, result.undo = outcome.changed, outcome.undo
                    result.recovered = outcome.recovered
                    break
                if isinstance(failure, StepRefused) or number > step.retries:
                    break
                if self.state.output is not None:
                    self.state.output(
                        step.name,
                        f"attempt {number} failed: {failure.detail}; "
                        f"again in {seconds(step.retry_delay.total_seconds())}",
                    )
                if self.state.stop.wait(step.retry_delay.total_seconds()):
                    break
        except BaseException:
            # Ctrl-C in the middle of a step: it is the one that failed.
            self.state.stop.set()
            failure = StepFailure("interrupted")
            raise
        finally:
            result.duration_s = time.monotonic() - began
            if failure is not None:
                result.status, result.detail = StepStatus.FAILED, failure.detail
                result.evidence = failure.evidence
                result.refused = isinstance(failure, StepRefused)
            self.notify(result)
        return result

    def group(self, labels: list[tuple[str, StepSpec]]) -> list[StepResult]:
        with ThreadPoolExecutor(len(labels), thread_name_prefix="runbook-group") as pool:
            futures = [pool.submit(self.step, label, step) for label, step in labels]
            try:
                wait(futures)
            except BaseException:
                self.state.stop.set()  # the steps in flight end soon after
                wait(futures)
                raise
        return [self.results[label] for label, _ in labels]


def run(
    runbook: Runbook,
    source: str,
    execute: bool = False,
    yes: bool = False,
    resume_from: str | None = None,
    on_step: OnStep | None = None,
    ask: Callable[[str], bool] | None = None,
    output: Callable[[str, str], None] | None = None,
    catalog_url: str | None = None,
) -> RunbookRun:
    """Run ``runbook`` (read from ``source``); without ``execute``, only plan it."""
    started = datetime.now(UTC)
    state = new_state(runbook, yes, ask=ask, output=output, declared_at=started)
    rto_target = runbook.rto_target.total_seconds() if runbook.rto_target else None
    rpo_target = runbook.rpo_target.total_seconds() if runbook.rpo_target else None
    if not execute:
        planned = plan(runbook, state, resume_from)
        return RunbookRun(
            runbook.name,
            source,
            RunStatus.DRY_RUN,
            started,
            plan=planned,
            rto_target_s=rto_target,
            rpo_target_s=rpo_target,
        )
    start = runbook.item_of(resume_from) if resume_from else 0
    flat = _flat(runbook)
    results = {
        label: StepResult(
            label,
            step.name,
            step.type,
            group,
            _resource(step),
            StepStatus.SKIPPED if index < start else StepStatus.NOT_RUN,
            verifies=kind_for(step).verifies,
        )
        for index, label, step, group in flat
    }
    runner = _Runner(state, results, on_step)
    status, stopped_at = RunStatus.SUCCEEDED, None
    try:
        for index, item in enumerate(runbook.steps):
            if index < start:
                continue
            labels = [(label, step) for i, label, step, _ in flat if i == index]
            if isinstance(item, GroupSpec):
                done = runner.group(labels)
            else:
                done = [runner.step(*labels[0])]
            failed = [r for r in done if r.status is StepStatus.FAILED]
            if failed:
                stopped_at = item.group if isinstance(item, GroupSpec) else item.name
                status = RunStatus.REFUSED if any(r.refused for r in failed) else RunStatus.FAILED
                break
    except BaseException as exc:  # Ctrl-C (KeyboardInterrupt, or the CLI's own signal)
        if isinstance(exc, Exception | SystemExit | GeneratorExit):
            raise
        status = RunStatus.INTERRUPTED
        stopped_at = _first_unfinished(runbook, list(results.values()))
    outcome = RunbookRun(
        runbook.name,
        source,
        status,
        started,
        steps=[results[label] for _, label, _, _ in flat],
        finished_at=datetime.now(UTC),
        rto_s=time.monotonic() - runner.t0,
        stopped_at=stopped_at,
        rto_target_s=rto_target,
        rpo_target_s=rpo_target,
    )
    outcome.drill = as_drill(runbook, outcome, resumed=resume_from is not None)
    outcome.record_warning = record(outcome.drill, catalog_url)
    return outcome


def _first_unfinished(runbook: Runbook, results: list[StepResult]) -> str | None:
    """The item to resume from: the one that failed, else the first that did not run."""
    for wanted in (StepStatus.FAILED, StepStatus.NOT_RUN):
        for result in results:
            if result.status is wanted:
                return runbook.item_names()[runbook.item_of(result.name)]
    return None


def as_drill(runbook: Runbook, outcome: RunbookRun, resumed: bool = False) -> Drill:
    """The run as the catalog keeps drills: a timeline, checks, what was recovered.
    A resumed run is marked so: its time is not the whole recovery's."""
    ran = [s for s in outcome.steps if s.status in (StepStatus.DONE, StepStatus.FAILED)]
    checks = [
        Check(
            s.name,
            s.status is StepStatus.DONE,
            s.detail,
            s.resource,
            {**s.evidence, "attempts": s.attempts},
        )
        for s in ran
        if s.verifies
    ]
    failure = None
    if outcome.status is not RunStatus.SUCCEEDED:
        not_run = [s.name for s in outcome.steps if s.status is StepStatus.NOT_RUN]
        failure = f"{outcome.status.value} at {outcome.stopped_at!r}" + (
            f"; not run: {', '.join(not_run)}" if not_run else ""
        )
    return Drill(
        id=new_id(DrillKind.RUNBOOK, outcome.started_at),
        kind=DrillKind.RUNBOOK,
        scenario=runbook.scenario,
        subject=runbook.name,
        started_at=outcome.started_at,
        declared_at=outcome.started_at,
        tier=runbook.tier,
        rto_target_s=outcome.rto_target_s,
        rpo_target_s=outcome.rpo_target_s,
        rto_s=outcome.rto_s,
        finished_at=outcome.finished_at,
        steps=[
            Step(s.name, s.at_s, s.duration_s, s.status is StepStatus.DONE, s.resource, s.detail)
            for s in ran
        ],
        checks=checks,
        recovered=[s.recovered for s in ran if s.recovered is not None],
        failure=failure,
        resources={s.recovered.resource: s.recovered.kind for s in ran if s.recovered},
        resumed=resumed,
    )


def record(drill: Drill, catalog_url: str | None = None) -> str | None:
    """Save the run in the catalog; a warning when it could not be saved."""
    from reprieve.catalog.db import open_catalog
    from reprieve.drills.store import save

    try:
        with open_catalog(catalog_url) as catalog:
            save(catalog, drill)
    except Exception as exc:  # the run happened: a catalog fault must not hide its outcome
        return f"the run was not recorded in the catalog: {exc}"
    return None
