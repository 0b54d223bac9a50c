"""A protected PostgreSQL cluster for the database tests, and what they do to it.

Each test gets its own cluster (tests/pg.py), a local vault, a REPRIEVE_HOME,
and a folder the ``postgres`` user can enter for restored clusters (pytest's
folders are mode 0700). Streaming runs as a real ``reprieve wal stream``
process, as it would in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from conftest import FAST_KDF, PASSWORD, Result, ok, run_cli
from pg import Postgres, postgres_bin, start_postgres

RESOURCE = "orders-db"


@dataclass
class Protected:
    pg: Postgres
    vault: Path
    env: dict[str, str]
    work: Path  # restored clusters live here

    def cli(self, *args: str | Path) -> Result:
        return run_cli(*args, env=self.env)

    def ok(self, *args: str | Path) -> Result:
        return ok(*args, env=self.env)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def base_backup(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.ok(
            "backup", "postgres", "--resource", RESOURCE, "--dsn", self.pg.dsn, "--json"
        ).json()
        return doc

    def restore(self, name: str, *target_args: str, start: bool = True) -> Result:
        args: list[str | Path] = ["restore", "postgres", "--resource", RESOURCE]
        args += ["--target", self.work / name]
        args += [*target_args, "--json"]
        if start:
            args.append("--start")
        return self.cli(*args)

    @contextmanager
    def streaming(self, synchronous: bool = False) -> Iterator[subprocess.Popen[bytes]]:
        env = {**os.environ, "REPRIEVE_PASSWORD": PASSWORD, **self.env}
        command = [sys.executable, "-m", "reprieve", "wal", "stream", "--resource", RESOURCE]
        command += ["--dsn", self.pg.dsn]
        if synchronous:
            command.append("--synchronous")
        log = self.work.parent / f"{self.work.name}-stream.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, env=env, stderr=out)
        try:
            wait_until(self.streamer_connected, what="pg_receivewal to connect")
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            output = log.read_text()
            log.unlink()
        assert proc.returncode == 0, output

    def streamer_connected(self) -> bool:
        rows = self.sql(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg_receivewal'"
        )
        return bool(rows[0][0])

    def wait_archived(self) -> None:
        """Close the current WAL segment and wait until it is in the vault, whole.

        (A streamed segment's pieces leave out trailing zero bytes, which the
        restore puts back, so their length cannot say whether an LSN arrived.)
        """
        (name,) = self.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]

        def arrived() -> bool:
            rows = self.ok("wal", "list", "--resource", RESOURCE, "--json").json()
            return any(r["name"] == name and not r["partial"] for r in rows)

        wait_until(arrived, what=f"WAL segment {name} in the vault")

    def stop_restored(self, name: str) -> None:
        pg_ctl(self.work / name, "stop", "-m", "immediate")


def wait_until(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pg_ctl(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    user = "postgres" if os.geteuid() == 0 else None
    return subprocess.run(
        [str(postgres_bin() / "pg_ctl"), "-D", str(data), *args],
        capture_output=True,
        text=True,
        user=user,
        group=user,
        extra_groups=[] if user else None,
    )


def connect_restored(port: int) -> psycopg.Connection[Any]:
    return psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres")


@contextmanager
def protected(tmp_path: Path, settings: dict[str, str] | None = None) -> Iterator[Protected]:
    base = {"synchronous_commit": "on", "track_commit_timestamp": "on"}
    pg = start_postgres(tmp_path / "pg", {**base, **(settings or {})})
    work = Path(tempfile.mkdtemp(prefix="reprieve-pitr-"))
    work.chmod(0o755)
    env = {"REPRIEVE_VAULT": str(tmp_path / "vault"), "REPRIEVE_HOME": str(tmp_path / "rhome")}
    try:
        ok("vault", "init", *FAST_KDF, env=env)
        yield Protected(pg, tmp_path / "vault", env, work)
    finally:
        for data in work.iterdir():
            if (data / "postmaster.pid").exists():
                pg_ctl(data, "stop", "-m", "immediate")
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def commit_times(p: Protected) -> list[tuple[int, datetime]]:
    rows = p.sql("SELECT id, pg_xact_commit_timestamp(xmin) FROM t ORDER BY id")
    return [(int(i), ts) for i, ts in rows]
