"""A real PostgreSQL server, started by the tests on 127.0.0.1.

The binaries come from Debian's postgresql package, which
scripts/install-test-tools.sh installs; the newest major under
/usr/lib/postgresql is used, never whatever is on PATH. Each instance is a
new cluster that trusts connections from 127.0.0.1 and listens there only,
on a free port, with its unix socket beside its data.

PostgreSQL refuses to run as root, so a root test run starts it as the
``postgres`` user. That user cannot enter pytest's 0700 temporary folders,
so the cluster lives in a folder of its own under /tmp (short, too: a unix
socket path must fit in 107 bytes), removed by ``stop``. The caller's
folder holds the server's log, which outlives the cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from seaweed import free_ports

DEBIAN_BINARIES = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin with a server in it."""
    found = [
        initdb.parent
        for initdb in DEBIAN_BINARIES.glob("*/bin/initdb")
        if (initdb.parent / "postgres").exists()
    ]
    if not found:
        pytest.fail(
            f"no PostgreSQL server under {DEBIAN_BINARIES}/*/bin: "
            "run scripts/install-test-tools.sh as root (Debian package postgresql)",
            pytrace=False,
        )
    return max(found, key=lambda path: [int(part) for part in path.parent.name.split(".")])


@dataclass
class Postgres:
    port: int
    process: subprocess.Popen[bytes]
    cluster: Path
    log: Path

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"

    @property
    def url(self) -> str:
        return self.database_url(SUPERUSER)

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{quote(name, safe='')}"

    def create_database(self, name: str) -> str:
        """A new, empty database: its URL."""
        # CREATE DATABASE cannot run inside a transaction.
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def stop(self) -> None:
        # SIGTERM would wait for every client to leave; SIGINT (fast shutdown)
        # ends their sessions, so a connection a test leaked cannot hang the run.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.cluster, ignore_errors=True)


def start_postgres(folder: Path, settings: dict[str, str] | None = None) -> Postgres:
    folder.mkdir(parents=True, exist_ok=True)
    binaries = postgres_bin()
    cluster = Path(tempfile.mkdtemp(prefix="reprieve-pg-"))
    # Popen switches user itself, unlike runuser, which would stay in between as a
    # parent and turn our SIGINT into SIGTERM, then SIGKILL two seconds later.
    as_root = os.geteuid() == 0
    user = group = SUPERUSER if as_root else None
    groups: list[str | int] | None = [] if as_root else None
    data = cluster / "data"
    log = folder / "postgres.log"
    try:
        if as_root:
            shutil.chown(cluster, SUPERUSER, SUPERUSER)
        with log.open("wb") as out:
            initdb = subprocess.run(
                [
                    str(binaries / "initdb"),
                    f"--pgdata={data}",
                    f"--username={SUPERUSER}",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cluster,
                user=user,
                group=group,
                extra_groups=groups,
            )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {log.read_text()[-2000:]}")
        # Replaces initdb's file, which also trusts ::1 and replication connections.
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
            "host replication all 127.0.0.1/32 trust\n"
        )
        (port,) = free_ports(1)
        # No fsync: the data is thrown away, and a killed server still recovers, as
        # only a crash of the whole machine loses writes that were not flushed.
        args = [
            str(binaries / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-k", str(cluster),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip
        for key, value in (settings or {}).items():
            args += ["-c", f"{key}={value}"]
        with log.open("ab") as out:
            process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cluster,
                user=user,
                group=group,
                extra_groups=groups,
            )
    except BaseException:
        shutil.rmtree(cluster, ignore_errors=True)
        raise
    server = Postgres(port, process, cluster, log)
    try:
        _wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: Postgres) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited: {server.log.read_text()[-2000:]}")
        try:
            psycopg.connect(server.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            time.sleep(0.05)
            continue
        return
    raise RuntimeError(f"postgres did not accept connections within 30 s: see {server.log}")
