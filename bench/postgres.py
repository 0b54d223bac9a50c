"""PostgreSQL side by side: reprieve against pgBackRest on one cluster, in one run.

One PostgreSQL cluster (the machine's Debian packages), filled by ``pgbench -i``,
protected by both tools at once: pgBackRest through ``archive_command`` (its
documented setup), reprieve by streaming (``reprieve wal stream``). Each step
runs the same work with each tool, and the figures are ratios:

- full backup: ``reprieve backup postgres`` and ``pgbackrest backup --type=full``;
- second backup after a pgbench run: reprieve's second base backup (deduplicated
  against the first) and pgBackRest's ``--type=incr``;
- restore to a time between two pgbench runs, until the cluster is promoted and
  accepts connections (pgBackRest restores files; PostgreSQL then replays
  through ``archive-get``, so its clock runs until promotion too);
- bytes stored in each repository;
- RPO at a crash in stream mode: the primary is stopped with ``-m immediate``
  during a write burst, and the last commit recovered is compared with the last
  one the client saw acknowledged.

Before each backup step the bench waits until pgBackRest's archiver has caught
up, and it checkpoints once after ``pgbench -i``: neither tool's step then pays
for the other's background work or for the load generator's dirty pages.

pgBackRest runs with its default settings (gz compression level 6, one process)
except ``start-fast=y``, which reprieve also uses (``--checkpoint=fast``): the
default would wait for the next scheduled checkpoint, which measures the
database's timer, not the tool. Run as root: PostgreSQL and pgBackRest run as
the ``postgres`` user.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.measure import BenchError, run_measured, tree_bytes  # noqa: E402
from bench.report import machine_info  # noqa: E402

PG = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    if Path("/usr/lib/postgresql").exists()
    else Path("/usr/bin")
)
USER = "postgres"
RESOURCE = "bench-db"
PASSWORD = "bench password"


def as_pg(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *cmd] if os.geteuid() == 0 else cmd


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-800:]}")
    return done


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, work: Path, port: int) -> None:
        self.data = work / "primary"
        self.port = port
        self.sock = work
        self.dsn = f"host=127.0.0.1 port={port} user={USER} dbname=postgres"

    def init(self, conf: Path, settings: dict[str, str]) -> None:
        run(
            as_pg(
                [str(PG / "initdb"), "-D", str(self.data), "-U", USER, "--no-sync", "-A", "trust"]
            )
        )
        lines = [f"{k} = '{v}'" for k, v in settings.items()]
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")

    def start(self) -> None:
        run(
            as_pg(
                [
                    str(PG / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.data / "log"),
                    "-w",
                    "start",
                ]
            )
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            as_pg([str(PG / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )

    def sql(self, query: str) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None


def settle(cluster: Cluster, timeout: float = 900) -> None:
    """Until pgBackRest's archive_command has caught up with the WAL written so far.

    Its archive-push gzips every segment; left behind after pgbench, it would
    take the cores from whichever step is measured next.
    """
    # The segment the switch closed (an empty one was closed before, and is named so).
    segment = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = cluster.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if done is not None and done >= segment:
            return
        time.sleep(0.2)
    raise BenchError(f"pgBackRest did not archive {segment} within {timeout:.0f} s")


def wait_promoted(port: int, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(
                f"host=127.0.0.1 port={port} user={USER} dbname=postgres", connect_timeout=2
            ) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
        except psycopg.OperationalError:
            pass
        time.sleep(0.05)
    raise BenchError(f"cluster on port {port} did not promote")


def count_rows(port: int) -> int:
    with psycopg.connect(f"host=127.0.0.1 port={port} user={USER} dbname=postgres") as conn:
        row = conn.execute("SELECT count(*) FROM pgbench_history").fetchone()
    assert row is not None
    return int(row[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--scale", type=int, default=100, help="pgbench scale (100 is about 1.5 GB)"
    )
    parser.add_argument("--seconds", type=int, default=20, help="each pgbench run (20)")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: PostgreSQL and pgBackRest run as the postgres user")
    if shutil.which("pgbackrest") is None:
        parser.error("pgbackrest not found: run bench/install-peers.sh")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reprieve-pgbench-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    shutil.chown(work, USER, USER)
    try:
        results = bench(work, args.scale, args.seconds)
    finally:
        for data in work.iterdir():
            if (data / "postmaster.pid").exists():
                subprocess.run(
                    as_pg([str(PG / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                    capture_output=True,
                )
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_report(results)
    return 0


def bench(work: Path, scale: int, seconds: int) -> dict[str, Any]:
    logs = work / "logs"
    logs.mkdir()
    port = free_port()
    cluster = Cluster(work, port)
    conf = work / "pgbackrest.conf"
    repo = work / "pgbr-repo"
    for folder in (repo, work / "pgbr-log", work / "pgbr-lock", work / "pgbr-spool"):
        folder.mkdir()
        shutil.chown(folder, USER, USER)
    conf.write_text(
        "[global]\n"
        f"repo1-path={repo}\nlog-path={work / 'pgbr-log'}\nlock-path={work / 'pgbr-lock'}\n"
        f"spool-path={work / 'pgbr-spool'}\nstart-fast=y\nrepo1-retention-full=10\n"
        f"[bench]\npg1-path={cluster.data}\npg1-port={port}\npg1-socket-path={work}\n"
    )
    conf.chmod(0o644)
    pgbr = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
    cluster.init(
        conf,
        {
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(work),
            "archive_mode": "on",
            "archive_command": f"pgbackrest --config={conf} --stanza=bench archive-push %p",
            "max_wal_senders": "10",
            "wal_level": "replica",
        },
    )
    cluster.start()
    vault = work / "vault"
    env = {
        **os.environ,
        "REPRIEVE_PASSWORD": PASSWORD,
        "REPRIEVE_VAULT": str(vault),
        "REPRIEVE_HOME": str(work / "reprieve-home"),
    }
    reprieve = [sys.executable, "-m", "reprieve"]
    run([*reprieve, "vault", "init", "--kdf-memory-kib", "65536"], env=env)
    run(as_pg([*pgbr, "stanza-create"]))
    print(f"pgbench -i -s {scale} …", flush=True)
    run(
        as_pg(
            [
                str(PG / "pgbench"),
                "-i",
                "-s",
                str(scale),
                "-q",
                "-h",
                str(work),
                "-p",
                str(port),
                "postgres",
            ]
        )
    )
    # pgbench -i leaves gigabytes dirty in memory; whichever tool's backup came
    # first would pay for writing them out in its start checkpoint.
    cluster.sql("CHECKPOINT")
    data_bytes = tree_bytes(cluster.data)
    with open(logs / "stream.log", "wb") as stream_log:
        streamer = subprocess.Popen(
            [*reprieve, "wal", "stream", "--resource", RESOURCE, "--dsn", cluster.dsn],
            env=env,
            stderr=stream_log,
        )
    out: dict[str, Any] = {"scale": scale, "data_bytes": data_bytes, "steps": {}}
    steps = out["steps"]

    def measure(
        name: str, tool: str, cmd: list[str], tool_env: dict[str, str] | None = None
    ) -> float:
        m = run_measured(cmd, env=tool_env or env, log=logs / f"{name}-{tool}.log", cwd=work)
        steps.setdefault(name, {})[tool] = {
            "seconds": round(m.seconds, 2),
            "cpu_s": round(m.cpu_seconds, 2),
            "peak_rss_mib": m.peak_rss_kib // 1024,
        }
        if tool == "reprieve" and m.stdout.strip().startswith("{"):
            doc = json.loads(m.stdout)
            if "phases" in doc:
                steps[name][tool]["phases"] = doc["phases"]
        print(f"{name:<16} {tool:<10} {m.seconds:8.2f} s", flush=True)
        return m.seconds

    try:
        settle(cluster)
        time.sleep(2)
        backup = [*reprieve, "backup", "postgres", "--resource", RESOURCE, "--dsn", cluster.dsn]
        measure("full_backup", "reprieve", [*backup, "--json"])
        measure("full_backup", "pgbackrest", as_pg([*pgbr, "--type=full", "backup"]))
        pgbench = as_pg(
            [
                str(PG / "pgbench"),
                "-T",
                str(seconds),
                "-c",
                "2",
                "-h",
                str(work),
                "-p",
                str(port),
                "postgres",
            ]
        )
        run(pgbench)
        target = datetime.now(UTC)
        expected = count_rows(port)
        time.sleep(1)
        run(pgbench)
        settle(cluster)
        measure("second_backup", "reprieve", [*backup, "--json"])
        measure("second_backup", "pgbackrest", as_pg([*pgbr, "--type=incr", "backup"]))
        time.sleep(2)  # the streamer ships the last piece
        when = target.isoformat(sep=" ")
        p1 = free_port()
        measure(
            "restore_to_time",
            "reprieve",
            [
                *reprieve,
                "restore",
                "postgres",
                "--resource",
                RESOURCE,
                "--target",
                str(work / "r-reprieve"),
                "--to-time",
                when,
                "--start",
                "--port",
                str(p1),
                "--json",
            ],
        )
        got = count_rows(p1)
        subprocess.run(
            as_pg([str(PG / "pg_ctl"), "-D", str(work / "r-reprieve"), "-m", "fast", "stop"]),
            capture_output=True,
        )
        p2 = free_port()
        restored = work / "r-pgbackrest"
        restored.mkdir(mode=0o700)
        shutil.chown(restored, USER, USER)
        script = work / "pgbackrest-restore.sh"
        script.write_text(
            "set -e\n"
            f"pgbackrest --config={conf} --stanza=bench --pg1-path={restored} --type=time "
            f"'--target={when}' --target-action=promote restore\n"
            f"{PG / 'pg_ctl'} -D {restored} -l {restored}/log "
            f"-o '-p {p2} -c archive_mode=off' start\n"
            f"psql='{PG / 'psql'} -h {work} -p {p2} -U {USER} -Atc'\n"
            "until [ \"$($psql 'select pg_is_in_recovery()' postgres 2>/dev/null)\" = f ]; do\n"
            "    sleep 0.05\n"
            "done\n"
        )
        script.chmod(0o755)
        measure("restore_to_time", "pgbackrest", as_pg(["bash", str(script)]))
        got_pgbr = count_rows(p2)
        subprocess.run(
            as_pg([str(PG / "pg_ctl"), "-D", str(restored), "-m", "fast", "stop"]),
            capture_output=True,
        )
        if got != expected or got_pgbr != expected:
            raise BenchError(
                f"restored rows differ: expected {expected}, reprieve {got}, pgBackRest {got_pgbr}"
            )
        out["restore_rows"] = expected
        out["stored_bytes"] = {"reprieve": tree_bytes(vault), "pgbackrest": tree_bytes(repo)}
        out["rpo_at_crash_s"] = crash_rpo(cluster, work, env, reprieve, port)
    finally:
        streamer.send_signal(signal.SIGTERM)
        streamer.wait(60)
        cluster.stop("immediate")
    out["ratios"] = {
        step: round(tools["pgbackrest"]["seconds"] / tools["reprieve"]["seconds"], 2)
        for step, tools in steps.items()
        if "pgbackrest" in tools and "reprieve" in tools
    }
    out["ratios"]["stored_bytes"] = round(
        out["stored_bytes"]["pgbackrest"] / out["stored_bytes"]["reprieve"], 2
    )
    return out


def crash_rpo(
    cluster: Cluster, work: Path, env: dict[str, str], reprieve: list[str], port: int
) -> float:
    """Write, crash the primary, restore --latest: acknowledged-but-lost time."""
    cluster.sql(
        "CREATE TABLE IF NOT EXISTS burst (id bigint, at timestamptz DEFAULT clock_timestamp())"
    )
    last: list[datetime] = []
    stop = threading.Event()

    def write() -> None:
        try:
            with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                while not stop.is_set():
                    row = conn.execute("INSERT INTO burst (id) VALUES (1) RETURNING at").fetchone()
                    assert row is not None
                    last.append(row[0])
        except psycopg.Error:
            pass

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(3)
    cluster.stop("immediate")
    stop.set()
    writer.join()
    time.sleep(1.5)  # the streamer ships what it received before the crash
    p = free_port()
    done = run(
        [
            *reprieve,
            "restore",
            "postgres",
            "--resource",
            RESOURCE,
            "--target",
            str(work / "r-crash"),
            "--latest",
            "--start",
            "--port",
            str(p),
            "--json",
        ],
        env=env,
    )
    doc = json.loads(done.stdout)
    with psycopg.connect(f"host=127.0.0.1 port={p} user={USER} dbname=postgres") as conn:
        row = conn.execute("SELECT max(at) FROM burst").fetchone()
    assert row is not None
    recovered = row[0]
    subprocess.run(
        as_pg([str(PG / "pg_ctl"), "-D", str(work / "r-crash"), "-m", "fast", "stop"]),
        capture_output=True,
    )
    lost = max(0.0, (last[-1] - recovered).total_seconds()) if last and recovered else float("nan")
    print(f"rpo at crash     reprieve   {lost:8.3f} s (restore {doc['duration_s']} s)", flush=True)
    return round(lost, 3)


def write_report(results: dict[str, Any]) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = HERE / "results"
    results["machine"] = machine_info()
    (folder / f"{stamp}-postgres.json").write_text(
        json.dumps(results, indent=2, sort_keys=True) + "\n"
    )
    lines = [
        f"# PostgreSQL: reprieve vs pgBackRest ({stamp})",
        "",
        f"pgbench scale {results['scale']}, data folder {results['data_bytes'] / 2**30:.2f} GiB; "
        f"{results['machine']['cores']} cores.",
        "",
        "| step | reprieve s | pgBackRest s | pgBackRest / reprieve |",
        "| --- | ---: | ---: | ---: |",
    ]
    for step, tools in results["steps"].items():
        lines.append(
            f"| {step} | {tools['reprieve']['seconds']} | {tools['pgbackrest']['seconds']} | "
            f"{results['ratios'][step]}x |"
        )
    stored = results["stored_bytes"]
    lines.append(
        f"| bytes stored | {stored['reprieve'] / 2**20:.0f} MiB | "
        f"{stored['pgbackrest'] / 2**20:.0f} MiB | {results['ratios']['stored_bytes']}x |"
    )
    lines += [
        "",
        f"RPO at a crash in stream mode: {results['rpo_at_crash_s']} s of acknowledged "
        "commits lost.",
        "",
    ]
    (folder / f"{stamp}-postgres.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
