"""``reprieve server``: the scheduler, /metrics and /healthz in one process.

Several servers may share one PostgreSQL catalog: each claims jobs under
row locks, so adding processes (or pods) adds capacity, never duplicates.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reprieve.catalog.db import Catalog
from reprieve.errors import ReprieveError, UsageError
from reprieve.scheduler.execute import VaultExecutor
from reprieve.scheduler.metrics import Metrics
from reprieve.scheduler.queue import Limits
from reprieve.scheduler.runner import Scheduler, wall_clock
from reprieve.scheduler.streams import StreamSupervisor

log = logging.getLogger("reprieve.scheduler")

VAULT_SIZES_EVERY_S = 300.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, such as 127.0.0.1:9180")
    return host.strip("[]") or "127.0.0.1", int(port)


def _handler(scheduler: Scheduler, metrics: Metrics, healthy_within: timedelta) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            elif path == "/healthz":
                last = scheduler.last_tick
                fresh = last is not None and wall_clock() - last <= healthy_within
                body = b"ok\n" if fresh else b"scheduler has not reached its catalog lately\n"
                self._send(200 if fresh else 503, "text/plain; charset=utf-8", body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # scrapes every few seconds would drown the job log

    return Handler


def _refresh_vault_sizes(
    scheduler: Scheduler, executor: VaultExecutor, metrics: Metrics, stopped: threading.Event
) -> None:
    while not stopped.is_set():
        found = scheduler.policy_quietly()
        if found is not None:
            sizes: dict[tuple[str, str], int] = {}
            for name in sorted(found[1].vaults):
                try:
                    vault = executor.keys.open(found[1], name)
                    used = sum(vault.stats().values())
                    sizes[(name, vault.config.storage_class or "STANDARD")] = used
                except ReprieveError as exc:
                    log.warning("vault %s: cannot measure it: %s", name, exc)
            metrics.set_vault_bytes(sizes)
        stopped.wait(VAULT_SIZES_EVERY_S)


def serve(
    catalog: Catalog,
    listen: tuple[str, int],
    limits: Limits,
    stopped: threading.Event,
    poll_s: float = 5.0,
) -> None:
    """Run until ``stopped`` is set; running jobs are stopped and handed back."""
    executor = VaultExecutor(catalog)
    metrics: Metrics | None = None

    def finished(job: Any) -> None:
        log.info(
            "job %s %s %s: %s%s",
            job.id,
            job.kind,
            job.resource or job.vault,
            job.state,
            f" ({job.error})" if job.error else "",
        )
        if metrics is not None:
            metrics.job_finished(job)

    scheduler = Scheduler(catalog, executor, worker_name(), limits=limits, on_finish=finished)
    metrics = Metrics(catalog, scheduler.policy_quietly, wall_clock)
    healthy_within = timedelta(seconds=3 * poll_s + 30)
    try:
        http = ThreadingHTTPServer(listen, _handler(scheduler, metrics, healthy_within))
    except OSError as exc:
        raise UsageError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}") from exc
    http.daemon_threads = True
    threads = [
        threading.Thread(target=http.serve_forever, name="http", daemon=True),
        threading.Thread(
            target=_refresh_vault_sizes,
            args=(scheduler, executor, metrics, stopped),
            name="vault-sizes",
            daemon=True,
        ),
    ]
    # Streams ship what they hold when stopping: the server waits for them.
    streams = threading.Thread(
        target=StreamSupervisor(scheduler.policy_quietly, executor.keys.open, stopped).run,
        name="wal-streams",
        daemon=True,
    )
    threads.append(streams)
    for thread in threads:
        thread.start()
    log.info("reprieve server %s listening on http://%s:%s", scheduler.worker, *listen)
    try:
        scheduler.serve(stopped, poll_s)
    finally:
        http.shutdown()
        http.server_close()
        stopped.set()
        streams.join(60)
