"""The scheduler loop: queue what is due, claim it, run it, record the end.

The clock and the executor are injected: ``reprieve server`` and
``reprieve run --once`` pass the wall clock and the executor that opens
vaults and backs up; tests pass a simulated clock and a recording one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from reprieve.catalog import policies
from reprieve.catalog.db import Catalog, as_utc
from reprieve.errors import DamageError, DrillFailed, ReprieveError, UsageError, WrongKeyError
from reprieve.policy.model import Policy
from reprieve.scheduler import queue
from reprieve.scheduler.plan import cron, series
from reprieve.scheduler.queue import JobView, Limits

log = logging.getLogger("reprieve.scheduler")

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


class JobCancelled(ReprieveError):
    """Raised inside a job asked to stop (cancelled, or past its completion window)."""


class Executor(Protocol):
    def __call__(self, job: JobView, policy: Policy, stop: threading.Event) -> dict[str, Any]:
        """Run ``job``; return its result document, or raise."""


SHUTDOWN = "stopped: its server shut down"
HEARTBEAT_S = 15.0  # well inside queue.STALE_AFTER
FINISH_RETRIES = (1.0, 2.0, 4.0, 8.0)

# Failures another attempt cannot mend: a wrong key, damage, a bad request.
# A failed drill is a finding, not a fault: a retry that passes would hide it.
NOT_RETRIED = (UsageError, WrongKeyError, DamageError, DrillFailed, JobCancelled)


class Scheduler:
    def __init__(
        self,
        catalog: Catalog,
        executor: Executor,
        worker: str,
        clock: Clock = wall_clock,
        limits: Limits | None = None,
        on_finish: Callable[[JobView], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.executor = executor
        self.worker = worker
        self.clock = clock
        self.limits = limits or Limits()
        self.on_finish = on_finish
        self._policy: tuple[int, datetime, Policy] | None = None
        self._running: dict[int, threading.Event] = {}
        self._why_stopped: dict[int, str] = {}
        self._lock = threading.Lock()
        self.last_tick: datetime | None = None

    def policy(self) -> tuple[datetime, Policy] | None:
        """(applied at, policy) in force; parsed again only when a new version is applied."""
        newest = policies.newest_version(self.catalog)
        if newest is None:
            return None
        if self._policy is None or self._policy[0] != newest[0]:
            found = policies.current(self.catalog)
            if found is None:
                return None
            row, policy = found
            self._policy = (row.id, as_utc(row.applied_at), policy)
        return self._policy[1], self._policy[2]

    def policy_quietly(self) -> tuple[datetime, Policy] | None:
        """``policy()``, or None while the catalog cannot be read."""
        try:
            return self.policy()
        except ReprieveError:
            return None

    def tick(self, free: int, enqueue: bool = True) -> list[JobView]:
        """Queue what came due, expire what cannot run, claim up to ``free`` jobs."""
        found = self.policy() if enqueue or self._policy is None else self._policy[1:]
        if found is None:
            return []
        since, policy = found
        now = self.clock()
        if enqueue:
            with self.catalog.session() as session:
                queue.enqueue_due(session, policy, since, now)
                queue.expire(session, now, self.worker)
        with self.catalog.session() as session:
            return queue.claim(session, self.worker, now, free, self.limits)

    def run(self, job: JobView) -> JobView:
        """Run one claimed job to its end and record that end."""
        # The policy the job was claimed under (the tick just read it).
        policy = self._policy[2] if self._policy is not None else None
        stop = threading.Event()
        with self._lock:
            self._running[job.id] = stop
        result: dict[str, Any] | None = None
        error: str | None = None
        retry = False
        try:
            if policy is None:
                raise UsageError("no policy in force")
            result = self.executor(job, policy, stop)
        except JobCancelled as exc:
            error = str(exc)
        except ReprieveError as exc:
            error = str(exc)
            retry = not isinstance(exc, NOT_RETRIED)
        except Exception as exc:  # a bug or an unexpected fault must not kill the server
            log.exception("job %s failed unexpectedly", job.id)
            error = f"{type(exc).__name__}: {exc}"
            retry = True
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                why = self._why_stopped.pop(job.id, None)
        handed_back = False
        if why is not None and error is not None:
            error = why
            # A job stopped by its server's shutdown goes back to the queue.
            handed_back = why == SHUTDOWN
            retry = False
        ended = self._finish(
            job,
            policy,
            result,
            error,
            retry,
            cancelled=error is not None and why == queue.CANCELLED_BY_REQUEST,
            handed_back=handed_back,
        )
        if self.on_finish is not None and ended is not None:
            self.on_finish(ended)
        return ended or job

    def _finish(self, job: JobView, policy: Policy | None, *args: Any, **kw: Any) -> JobView | None:
        """Record the end, again after a catalog blip; None when it cannot be."""
        for delay in FINISH_RETRIES:
            try:
                with self.catalog.session() as session:
                    return queue.finish(session, job, self.clock(), policy, *args, **kw)
            except queue.LostJob as exc:
                log.warning("%s", exc)
                return None
            except ReprieveError as exc:
                log.warning("job %s: recording its end failed (%s); trying again", job.id, exc)
                time.sleep(delay)
        log.error("job %s: its end could not be recorded; it will be taken back and rerun", job.id)
        return None

    def heartbeat(self) -> None:
        """Keep this server's running jobs alive; stop those asked to stop."""
        with self._lock:
            running = dict(self._running)
        with self.catalog.session() as session:
            stopping = queue.beat(session, running, self.clock(), self.worker)
        with self._lock:
            self._why_stopped.update(stopping)
        for job_id in stopping:
            running[job_id].set()

    def run_once(self) -> list[JobView]:
        """Run everything due now, and the copies that follow, then return.

        Jobs are claimed one at a time, so none waits as running while
        another runs, and their heartbeats keep them from being taken back.
        """
        ended: list[JobView] = []
        first = True
        with self._heartbeats():
            while True:
                claimed = self.tick(1, enqueue=first)
                first = False
                if not claimed:
                    return ended
                ended.append(self.run(claimed[0]))

    @contextmanager
    def _heartbeats(self) -> Iterator[None]:
        """Beat for this server's running jobs every few seconds, on a thread."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_S):
                try:
                    self.heartbeat()
                except ReprieveError as exc:
                    log.warning("heartbeat: %s", exc)

        thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def next_wakeup(self, now: datetime) -> datetime:
        """The next time something may become due: a firing or a retry."""
        found = self.policy()
        candidates = [now + timedelta(days=1)]
        if found is not None:
            for s in series(found[1]):
                candidates.append(cron(s.schedule).next_after(now))
        with self.catalog.session() as session:
            waiting = queue.next_pending(session)
        if waiting is not None and waiting > now:
            candidates.append(waiting)
        return min(candidates)

    def serve(self, stopped: threading.Event, poll_s: float = 5.0) -> None:
        """Claim and run jobs on a thread pool until ``stopped`` is set."""
        futures: set[Future[JobView]] = set()
        with self._heartbeats(), ThreadPoolExecutor(self.limits.jobs, "job") as pool:
            while not stopped.is_set():
                for done in [f for f in futures if f.done()]:
                    futures.discard(done)
                    if done.exception() is not None:
                        log.error("job runner failed", exc_info=done.exception())
                try:
                    for job in self.tick(self.limits.jobs - len(futures)):
                        futures.add(pool.submit(self.run, job))
                    self.last_tick = self.clock()
                except ReprieveError as exc:
                    # A catalog that went away for a moment: try again next poll.
                    log.warning("scheduler: %s", exc)
                stopped.wait(poll_s)
            with self._lock:
                for job_id, event in self._running.items():
                    self._why_stopped[job_id] = SHUTDOWN
                    event.set()
