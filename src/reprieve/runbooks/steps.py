"""The kinds of runbook step, each behind one small :class:`StepKind` seam.

A kind does two things. ``describe`` says what the step would do, against
what exists now, and what it would change or overwrite; it must change
nothing (a plan is read-only: at most a probe such as an HTTP GET). ``run``
does one attempt and returns a :class:`StepOutcome` (a line of detail, the
evidence, what it changed and what undoing that means), or raises: a
:class:`StepFailure` carries the evidence gathered up to the failure; any
other error fails the attempt with its message. Retries, timing, and order
belong to the engine, not to the kinds.

An attempt can be stopped from outside (the run is interrupted) and has a
deadline (the step's timeout): kinds that wait or stream check
:meth:`Attempt.check` as they go; a command is killed, with its whole
process group.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from reprieve.children import start_group
from reprieve.drills.model import Recovered
from reprieve.errors import NotFoundError, ReprieveError
from reprieve.policy.model import show_duration
from reprieve.runbooks.model import (
    ApprovalSpec,
    DnsProviderKind,
    DnsSpec,
    FilesRestoreSpec,
    HttpCheckSpec,
    Runbook,
    StandbyPromoteSpec,
    StepSpec,
)

if TYPE_CHECKING:
    from reprieve.runbooks.restore import VaultCache

TAIL_LINES = 20  # of a command's output, kept as evidence
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL of a command's process group
BODY_LIMIT = 1 << 20  # bytes of an HTTP answer read for body_contains
PROBE_TIMEOUT_S = 2.0  # of the plan's look at an HTTP check's endpoint


class StepFailure(ReprieveError):
    """One attempt of a step did not do its job; ``evidence`` says what was seen."""

    def __init__(self, detail: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.evidence = evidence or {}


class StepRefused(StepFailure):
    """An approval was refused: the run stops, and no retry asks again."""


@dataclass
class Description:
    """What a step would do, as things stand now."""

    action: str
    now: str = ""
    change: str | None = None  # what would differ, or be overwritten
    problem: str | None = None  # why it would fail or be refused as things stand
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "now": self.now,
            "change": self.change,
            "problem": self.problem,
            "details": self.details,
        }


@dataclass
class StepOutcome:
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)
    changed: str | None = None  # what the step changed, for the state of things after a stop
    undo: str | None = None  # what rolling that back means
    recovered: Recovered | None = None  # a restore's part of the run's record


@dataclass
class RunState:
    """What every step of one plan or run shares."""

    runbook: Runbook
    vaults: VaultCache
    yes: bool = False
    # Asks a person a yes/no question; None when there is no one to ask.
    ask: Callable[[str], bool] | None = None
    # Receives a step's output as it comes: (step name, line).
    output: Callable[[str, str], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    declared_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Attempt:
    state: RunState
    step: StepSpec
    number: int  # from 1
    timeout_s: float | None
    deadline: float | None  # time.monotonic() by which the attempt must end

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise if the run was interrupted or the attempt is out of time."""
        if self.state.stop.is_set():
            raise StepFailure("interrupted")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise StepFailure(f"timed out after {seconds(self.timeout_s)}")

    def log(self, line: str) -> None:
        if self.state.output is not None:
            self.state.output(self.step.name, line)


class StepKind(Protocol):
    verifies: bool  # its outcome is a check, recorded with its evidence
    default_timeout: float | None  # seconds, when the step gives none

    def describe(self, state: RunState) -> Description: ...

    def run(self, attempt: Attempt) -> StepOutcome: ...


def seconds(value: float | None) -> str:
    if value is None:
        return "no limit"
    return show_duration(timedelta(seconds=round(value))) if value >= 60 else f"{value:.1f}s"


def age(when: datetime, now: datetime | None = None) -> str:
    gap = ((now or datetime.now(UTC)) - when).total_seconds()
    return f"{seconds(max(0.0, gap))} old"


# -- command -------------------------------------------------------------------------


class CommandStep:
    verifies = False
    default_timeout: float | None = None

    def __init__(self, command: list[str] | str) -> None:
        self.shell = isinstance(command, str)
        self.argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        self.shown = command if isinstance(command, str) else shlex.join(command)

    def describe(self, state: RunState) -> Description:
        action = f"run `{self.shown}`"
        if self.shell:
            return Description(action, now="runs in /bin/sh")
        found = shutil.which(self.argv[0])
        if found is None:
            return Description(action, problem=f"{self.argv[0]} is not found on PATH")
        return Description(action, now=f"{self.argv[0]} is {found}")

    def run(self, attempt: Attempt) -> StepOutcome:
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        evidence: dict[str, Any] = {"argv": self.argv, "exit_code": None, "output": []}
        try:
            # Its own process group: a timeout or an interrupt stops all it started.
            proc = start_group(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except FileNotFoundError:
            raise StepFailure(f"command not found: {self.argv[0]}", evidence) from None
        except OSError as exc:
            raise StepFailure(f"cannot run {self.argv[0]}: {exc.strerror}", evidence) from exc

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                tail.append(line)
                attempt.log(line)

        stopped: str | None = None
        try:  # from the first call on: a Ctrl-C may be acted on at any call
            reader = threading.Thread(target=read, name="runbook-output", daemon=True)
            reader.start()
            while proc.poll() is None:
                try:
                    attempt.check()
                except StepFailure as exc:
                    stopped = exc.detail
                    _stop_group(proc)
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
        except BaseException:
            _stop_group(proc)  # Ctrl-C here: the command must not outlive the run
            raise
        # A daemon the command started may hold the pipe open: its output is not waited for.
        reader.join(timeout=2.0)
        if proc.stdout is not None and not reader.is_alive():
            proc.stdout.close()
        evidence.update(exit_code=proc.returncode, output=list(tail))
        if stopped is not None:
            raise StepFailure(stopped, evidence)
        last = f": {tail[-1]}" if tail else ""
        if proc.returncode < 0:
            raise StepFailure(f"killed by signal {-proc.returncode}{last}", evidence)
        if proc.returncode != 0:
            raise StepFailure(f"exited with {proc.returncode}{last}", evidence)
        return StepOutcome(
            f"exited 0{last}",
            evidence,
            changed=f"ran `{self.shown}`",
            undo="reprieve cannot tell what the command changed: undo it by its own means",
        )


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


# -- http_check ----------------------------------------------------------------------

# Checks go straight to the service, never through http_proxy: they measure the
# service, and a DR region's proxy is often the thing that is down.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(spec: HttpCheckSpec, timeout: float) -> tuple[int, str, float]:
    """(status, the body's start, milliseconds); StepFailure when nothing answers."""
    request = urllib.request.Request(spec.url, method=spec.method.upper(), headers=spec.headers)
    began = time.monotonic()
    try:
        try:
            with _direct.open(request, timeout=timeout) as answer:
                status, body = int(answer.status), answer.read(BODY_LIMIT)
        except urllib.error.HTTPError as exc:
            with exc:
                status, body = exc.code, exc.read(BODY_LIMIT)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror  # "Connection refused", without the errno
        raise StepFailure(f"cannot reach {spec.url}: {reason}") from exc
    except TimeoutError as exc:
        raise StepFailure(f"no answer from {spec.url} within {seconds(timeout)}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise StepFailure(f"{spec.url}: {exc or type(exc).__name__}") from exc
    return status, body.decode("utf-8", "replace"), (time.monotonic() - began) * 1000


class HttpCheckStep:
    verifies = True
    default_timeout: float | None = 10.0

    def __init__(self, spec: HttpCheckSpec) -> None:
        self.spec = spec

    def _expect(self) -> str:
        body = f" with {self.spec.body_contains!r} in the body" if self.spec.body_contains else ""
        return f"{self.spec.status}{body}"

    def describe(self, state: RunState) -> Description:
        action = f"{self.spec.method.upper()} {self.spec.url}, expect {self._expect()}"
        if self.spec.method.upper() not in ("GET", "HEAD"):
            return Description(action, now=f"not probed ({self.spec.method} may change things)")
        try:
            status, body, _ = http_request(self.spec, PROBE_TIMEOUT_S)
        except StepFailure as exc:
            return Description(action, now=exc.detail)
        wanted = self.spec.body_contains
        if wanted is not None:
            return Description(
                action,
                now=f"now answers {status}, {'with' if wanted in body else 'without'} {wanted!r}",
            )
        return Description(action, now=f"now answers {status}")

    def run(self, attempt: Attempt) -> StepOutcome:
        spec = self.spec
        timeout = attempt.remaining() or self.default_timeout or 10.0
        evidence: dict[str, Any] = {
            "url": spec.url,
            "method": spec.method.upper(),
            "expected_status": spec.status,
            "body_contains": spec.body_contains,
        }
        try:
            status, body, took_ms = http_request(spec, timeout)
        except StepFailure as exc:
            raise StepFailure(exc.detail, evidence) from exc
        evidence.update(status=status, elapsed_ms=round(took_ms, 1), body_excerpt=body[:200])
        if status != spec.status:
            raise StepFailure(f"{spec.url} answered {status}, expected {spec.status}", evidence)
        if spec.body_contains is not None and spec.body_contains not in body:
            raise StepFailure(f"{spec.url} answered without {spec.body_contains!r}", evidence)
        return StepOutcome(f"{spec.url} answered {status} in {took_ms:.0f} ms", evidence)


# -- wait, approval --------------------------------------------------------------------


class WaitStep:
    verifies = False
    default_timeout: float | None = None

    def __init__(self, length: timedelta) -> None:
        self.length = length

    def describe(self, state: RunState) -> Description:
        return Description(f"wait {show_duration(self.length)}")

    def run(self, attempt: Attempt) -> StepOutcome:
        if attempt.state.stop.wait(self.length.total_seconds()):
            raise StepFailure("interrupted")
        return StepOutcome(f"waited {show_duration(self.length)}")


class ApprovalStep:
    verifies = False
    default_timeout: float | None = None

    def __init__(self, spec: ApprovalSpec) -> None:
        self.spec = spec

    def describe(self, state: RunState) -> Description:
        action = f"ask: {self.spec.prompt}"
        if state.yes:
            return Description(action, now="approved in advance by --yes")
        if state.ask is None:
            return Description(action, problem=NO_TERMINAL)
        return Description(action, now="asks on the terminal; no stops the run")

    def run(self, attempt: Attempt) -> StepOutcome:
        state = attempt.state
        if state.yes:
            return StepOutcome("approved by --yes", {"approved": True, "by": "--yes"})
        if state.ask is None:
            raise StepFailure(NO_TERMINAL, {"approved": False})
        from reprieve.catalog.audit import actor

        who = actor()
        if not state.ask(self.spec.prompt):
            raise StepRefused(f"refused by {who}: {self.spec.prompt}", {"approved": False})
        return StepOutcome(f"approved by {who}", {"approved": True, "by": who})


NO_TERMINAL = "needs an approval and there is no terminal to ask on; run it on one or pass --yes"


# -- standby_promote -----------------------------------------------------------------


class StandbyPromoteStep:
    verifies = False
    default_timeout: float | None = None

    def __init__(self, spec: StandbyPromoteSpec) -> None:
        self.spec = spec

    def describe(self, state: RunState) -> Description:
        from reprieve.sources.pg_standby import read_state

        resource = self.spec.resource
        action = f"promote the standby of {resource} to a primary"
        try:
            found = read_state(resource)
        except NotFoundError as exc:
            return Description(action, problem=str(exc))
        now = (
            f"standby of {resource} is {found.get('state', '?')} on port {found.get('port')}, "
            f"data in {found.get('target')}"
        )
        problem = "it was already promoted" if found.get("state") == "promoted" else None
        return Description(
            action, now=now, change=f"{resource} starts taking writes", problem=problem
        )

    def run(self, attempt: Attempt) -> StepOutcome:
        from reprieve.sources.pg_standby import promote

        doc = promote(self.spec.resource)
        return StepOutcome(
            f"promoted in {doc['promote_s']:.1f}s; accepting writes on port {doc['port']}",
            doc,
            changed=f"promoted the standby of {self.spec.resource} (port {doc['port']})",
            undo=(
                "a promoted standby cannot be turned back; fail back by restoring the other "
                "region from the vault"
            ),
        )


# -- dns -----------------------------------------------------------------------------


class DnsStep:
    verifies = False
    default_timeout: float | None = None

    def __init__(self, spec: DnsSpec) -> None:
        self.spec = spec

    def _action(self, where: str) -> str:
        spec = self.spec
        # A hosts file has no TTL.
        ttl = "" if spec.provider is DnsProviderKind.HOSTS_FILE else f" (ttl {spec.ttl})"
        return f"point {spec.record} {spec.type} at {spec.value}{ttl} in {where}"

    def describe(self, state: RunState) -> Description:
        from reprieve.runbooks.dns import ZoneFile, next_serial, normal_value, provider_for

        spec = self.spec
        provider = provider_for(spec)
        action = self._action(provider.where)
        try:
            now = provider.current(spec.record, spec.type)
            serial = provider.serial() if isinstance(provider, ZoneFile) else None
        except ReprieveError as exc:
            return Description(action, problem=str(exc))
        shown = f"{spec.record} {spec.type} is {now}" if now else f"no {spec.type} record"
        details = {"previous": now, "value": spec.value}
        if now == normal_value(spec.type, spec.value):
            return Description(action, now=shown, change=None, details=details)
        change = f"{now or 'none'} → {spec.value}"
        if serial is not None:
            change += f"; SOA serial {serial} → {next_serial(serial, datetime.now(UTC))}"
        return Description(action, now=shown, change=change, details=details)

    def run(self, attempt: Attempt) -> StepOutcome:
        from reprieve.runbooks.dns import normal_value, provider_for

        spec = self.spec
        provider = provider_for(spec, attempt.remaining())
        want = normal_value(spec.type, spec.value)
        previous = provider.current(spec.record, spec.type)
        evidence: dict[str, Any] = {
            "provider": spec.provider.value,
            "where": provider.where,
            "record": spec.record,
            "type": spec.type.value,
            "previous": previous,
            "value": want,
            "ttl": spec.ttl,
        }
        if previous == want:
            return StepOutcome(f"{spec.record} {spec.type} is already {want}", evidence)
        attempt.check()
        provider.set(spec.record, spec.type, spec.value, spec.ttl)
        after = provider.current(spec.record, spec.type)
        evidence["after"] = after
        if after != want:
            raise StepFailure(f"after the change {spec.record} reads {after}, not {want}", evidence)
        if previous is None:
            undo = f"remove the {spec.record} {spec.type} record (there was none before)"
        else:
            undo = f"set {spec.record} {spec.type} back to {previous} (a dns step)"
        return StepOutcome(
            f"{spec.record} {spec.type}: {previous or 'none'} → {want}",
            evidence,
            changed=f"{spec.record} {spec.type} {previous or 'none'} → {want} in {provider.where}",
            undo=undo,
        )


def kind_for(step: StepSpec) -> StepKind:
    """The kind that runs ``step``."""
    if step.command is not None:
        return CommandStep(step.command)
    if step.http_check is not None:
        return HttpCheckStep(step.http_check)
    if step.dns is not None:
        return DnsStep(step.dns)
    if step.wait is not None:
        return WaitStep(step.wait)
    if step.approval is not None:
        return ApprovalStep(step.approval)
    if step.standby_promote is not None:
        return StandbyPromoteStep(step.standby_promote)
    assert step.restore is not None
    from reprieve.runbooks.restore import FilesRestoreStep, PostgresRestoreStep

    if isinstance(step.restore, FilesRestoreSpec):
        return FilesRestoreStep(step.restore)
    return PostgresRestoreStep(step.restore)
