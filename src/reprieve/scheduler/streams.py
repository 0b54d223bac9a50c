"""The server's continuous work: WAL streaming and its copies to the DR vaults.

For every ``postgres`` resource in ``wal_mode: stream``, the server keeps
one :class:`~reprieve.sources.pg_wal.Streamer` running into the vault of the
rule that protects it (a ``continuous`` rule if its plan has one, else its
first rule), and every ``COPY_EVERY_S`` sends the WAL that rule's copy
vaults lack, so the DR region's RPO for a database is seconds, not the
base-backup schedule. A streamer that stops (server gone, slot busy) is
started again on the next pass; a resource leaving the policy is stopped.

One slot per resource: a second server started on the same policy finds
the slot busy and keeps retrying; it takes over when the first one stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reprieve.errors import ReprieveError
from reprieve.policy.model import Policy, ResourceKind, WalMode
from reprieve.scheduler.plan import resources_of
from reprieve.sources.pg_wal import Streamer, default_spool
from reprieve.vault.logs import LogStore, copy_logs
from reprieve.vault.repository import Vault

log = logging.getLogger("reprieve.server")

PASS_EVERY_S = 5.0
COPY_EVERY_S = 10.0


@dataclass(frozen=True)
class StreamSpec:
    resource: str
    vault: str
    dsn: str
    synchronous: bool
    copies: tuple[str, ...]


def stream_specs(policy: Policy) -> dict[str, StreamSpec]:
    """The resources the policy wants streamed, with their vault and copy vaults."""
    found: dict[str, StreamSpec] = {}
    for plan_name, plan in policy.plans.items():
        rules = sorted(plan.rules, key=lambda r: not r.continuous)
        if not rules:
            continue
        rule = rules[0]
        for name in resources_of(policy, plan_name):
            spec = policy.resources[name]
            if spec.kind != ResourceKind.POSTGRES or spec.wal_mode != WalMode.STREAM:
                continue
            if name in found or not spec.connection:
                continue
            copies = tuple(c.vault for c in rule.copies)
            found[name] = StreamSpec(name, rule.vault, spec.connection, spec.synchronous, copies)
    return found


class _Running:
    def __init__(self, spec: StreamSpec, streamer: Streamer) -> None:
        self.spec = spec
        self.streamer = streamer
        self.thread = threading.Thread(
            target=self._run, name=f"wal-stream-{spec.resource}", daemon=True
        )
        self.copied_at = 0.0

    def _run(self) -> None:
        try:
            self.streamer.run()
        except ReprieveError as exc:
            log.warning("WAL streaming of %s stopped: %s", self.spec.resource, exc)


class StreamSupervisor:
    def __init__(
        self,
        policy: Callable[[], tuple[datetime, Policy] | None],
        open_vault: Callable[[Policy, str], Vault],
        stopped: threading.Event,
        spool_root: Path | None = None,
    ) -> None:
        self.policy = policy
        self.open_vault = open_vault
        self.stopped = stopped
        self.spool_root = spool_root
        self.running: dict[str, _Running] = {}
        self.errors: dict[str, str] = {}

    def _spool(self, resource: str) -> Path:
        if self.spool_root is not None:
            return self.spool_root / f"{resource}-stream"
        return default_spool(f"{resource}-stream")

    def step(self) -> None:
        found = self.policy()
        wanted = stream_specs(found[1]) if found else {}
        for name in list(self.running):
            run = self.running[name]
            if wanted.get(name) != run.spec or not run.thread.is_alive():
                run.streamer.stop.set()
                run.thread.join(30)
                del self.running[name]
        if found is None:
            return
        policy = found[1]
        for name, spec in wanted.items():
            if name not in self.running:
                try:
                    vault = self.open_vault(policy, spec.vault)
                except ReprieveError as exc:
                    self.errors[name] = str(exc)
                    continue
                streamer = Streamer(vault, name, spec.dsn, self._spool(name), spec.synchronous)
                run = _Running(spec, streamer)
                self.running[name] = run
                run.thread.start()
            self._copy(policy, self.running[name])

    def _copy(self, policy: Policy, run: _Running) -> None:
        if not run.spec.copies or time.monotonic() - run.copied_at < COPY_EVERY_S:
            return
        run.copied_at = time.monotonic()
        src = LogStore(run.streamer.store.vault, run.spec.resource)
        for target in run.spec.copies:
            try:
                dst = LogStore(self.open_vault(policy, target), run.spec.resource)
                copy_logs(src, dst)
                self.errors.pop(run.spec.resource, None)
            except ReprieveError as exc:
                self.errors[run.spec.resource] = f"copying WAL to {target}: {exc}"
                log.warning("WAL of %s not copied to %s: %s", run.spec.resource, target, exc)

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                try:
                    self.step()
                except ReprieveError as exc:
                    log.warning("WAL streaming: %s", exc)
                self.stopped.wait(PASS_EVERY_S)
        finally:
            for run in self.running.values():
                run.streamer.stop.set()
            for run in self.running.values():
                run.thread.join(30)
