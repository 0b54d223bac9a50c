"""Repositories in S3: a SeaweedFS gateway on 127.0.0.1, over http, with a bucket per tool.

reprieve's vault is ``s3://BUCKET/bench?endpoint=URL`` and restic's repository
``s3:URL/BUCKET/bench``; both get the gateway's credentials and none of the user's other
``AWS_*`` settings (``AWS_CA_BUNDLE`` and profiles included), so local AWS configuration
cannot change the figures. A repository's size is the sum of the object sizes in its
bucket. The gateway runs on the same cores as the tools: its CPU time during a step is
recorded as ``server_cpu_seconds`` and left out of the step's "other CPU" figure.

Every timed step follows the same traffic: :func:`warm` puts 512 MiB through the gateway,
eight writers at once, just before. The gateway's state moves the figures both ways, so it
must be the same for every tool: a new ``weed`` process grows its heap to about a GiB under
its first heavy writes, which under eight writers cost it about 300,000 page faults and 4
CPU seconds more than a warmed one (the copy bench ran reprieve's copy first on a new
server), while a backup's two writers ran about a second faster on a new server than on a
warmed one, for every tool. The server's page faults during each step are recorded to
show the state each tool met.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bench.measure import BenchError, Measured
from bench.peers import Reprieve, Restic, Runner, StepResult

_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from seaweed import Seaweed as Seaweed  # noqa: E402  (re-exported)
from seaweed import start_seaweed  # noqa: E402

PREFIX = "bench"
WARM_BUCKET = "bench-warmup"
WARM_OBJECTS = 32
WARM_OBJECT_BYTES = 16 * 1024 * 1024
WARM_WRITERS = 8
S3_ERRORS = (BotoCoreError, ClientError)
_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@contextmanager
def seaweed_server(folder: Path) -> Iterator[Seaweed]:
    """A running gateway with its data in ``folder``, stopped on the way out whatever happens."""
    try:
        server = start_seaweed(folder)
    except RuntimeError as exc:
        raise BenchError(f"cannot start SeaweedFS: {exc}") from exc
    try:
        yield server
    finally:
        server.stop()


def server_version() -> str:
    from seaweed import weed_binary

    try:
        done = subprocess.run([weed_binary(), "version"], capture_output=True, text=True)
    except (OSError, RuntimeError):
        return "unknown"
    first = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    return first.removeprefix("version ").strip() or "unknown"


def credentials(server: Seaweed) -> dict[str, str]:
    return {key: server.env[key] for key in _CREDENTIALS}


def s3_client(server: Seaweed, connections: int = 10) -> Any:
    env = server.env
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(
            max_pool_connections=connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def list_objects(client: Any, bucket: str) -> list[tuple[str, int]]:
    """(key, size) of every object in ``bucket``."""
    found: list[tuple[str, int]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.extend((obj["Key"], int(obj["Size"])) for obj in page.get("Contents", []))
    return found


@dataclasses.dataclass(frozen=True)
class Bucket:
    server: Seaweed
    name: str

    def object_bytes(self) -> int:
        try:
            return sum(size for _, size in list_objects(s3_client(self.server), self.name))
        except S3_ERRORS as exc:
            raise BenchError(f"cannot list bucket {self.name}: {exc}") from exc


def create_bucket(server: Seaweed, name: str, object_lock: bool = False) -> Bucket:
    try:
        s3_client(server).create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    except S3_ERRORS as exc:
        raise BenchError(f"cannot create bucket {name} at {server.endpoint}: {exc}") from exc
    return Bucket(server, name)


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` from field 3 (state) on; empty if unknown."""
    try:
        # The command name, in parentheses, may itself hold spaces.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its reaped children; 0 if unknown."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def process_page_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far; 0 if unknown."""
    fields = _stat_fields(pid)
    return int(fields[7]) if fields else 0  # minflt


def warm(server: Seaweed) -> None:
    """Put 512 MiB through ``server`` as eight writers at once, overwriting the same keys,
    and flush it to disk so that its writeback does not run on the next step's clock."""
    client = s3_client(server, WARM_WRITERS)
    body = os.urandom(WARM_OBJECT_BYTES)
    try:
        if not any(b["Name"] == WARM_BUCKET for b in client.list_buckets().get("Buckets", [])):
            client.create_bucket(Bucket=WARM_BUCKET)
        with ThreadPoolExecutor(WARM_WRITERS) as pool:
            list(
                pool.map(
                    lambda i: client.put_object(Bucket=WARM_BUCKET, Key=f"warm/{i}", Body=body),
                    range(WARM_OBJECTS),
                )
            )
    except S3_ERRORS as exc:
        raise BenchError(f"cannot warm the S3 server at {server.endpoint}: {exc}") from exc
    os.sync()


class S3Runner(Runner):
    """A runner whose repository lives in ``bucket`` (mixed in before the tool's runner)."""

    object_lock = False

    def __init__(self, data: Path, workdir: Path, bucket: Bucket) -> None:
        super().__init__(data, workdir)
        self.bucket = bucket
        self.server_cpu_seconds = 0.0
        self.server_page_faults = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if not k.startswith("AWS_")}
        env.update(credentials(self.bucket.server))
        return env

    def repo_bytes(self) -> int:
        return self.bucket.object_bytes()

    def run(self, label: str, cmd: list[str], cwd: Path | None = None) -> Measured:
        warm(self.bucket.server)
        pid = self.bucket.server.process.pid
        before, faults = process_cpu_seconds(pid), process_page_faults(pid)
        done = super().run(label, cmd, cwd)
        self.server_cpu_seconds = max(0.0, process_cpu_seconds(pid) - before)
        self.server_page_faults = max(0, process_page_faults(pid) - faults)
        other = max(0.0, done.other_cpu_seconds - self.server_cpu_seconds)
        return dataclasses.replace(done, other_cpu_seconds=other)

    def step_details(self) -> dict[str, object]:
        return {
            "server_cpu_seconds": round(self.server_cpu_seconds, 2),
            "server_page_faults": self.server_page_faults,
        }


class S3Reprieve(S3Runner, Reprieve):
    def vault(self) -> str:
        return f"s3://{self.bucket.name}/{PREFIX}?endpoint={self.bucket.server.endpoint}"


class S3ReprieveLocked(S3Reprieve):
    """reprieve on an Object Lock bucket: every point locked, reused packs extended."""

    name = "reprieve-locked"
    object_lock = True

    def init_cmd(self) -> list[str]:
        return [*super().init_cmd(), "--lock", "governance", "--min-retention", "1d"]


class S3Restic(S3Runner, Restic):
    def repository(self) -> str:
        return f"s3:{self.bucket.server.endpoint}/{self.bucket.name}/{PREFIX}"


S3_RUNNERS: dict[str, type[S3Runner]] = {
    r.name: r for r in (S3Reprieve, S3ReprieveLocked, S3Restic)
}


def s3_runners(
    server: Seaweed, tools: list[str], data: Path, workdir: Path, suffix: str = ""
) -> list[Runner]:
    """One runner per tool, each with a new bucket ``bench-TOOL[SUFFIX]`` on ``server``."""
    return [
        S3_RUNNERS[tool](
            data,
            workdir,
            create_bucket(server, f"{PREFIX}-{tool}{suffix}", S3_RUNNERS[tool].object_lock),
        )
        for tool in tools
    ]


def s3_notes(server: Seaweed) -> tuple[str, ...]:
    return (
        f"Storage: S3, SeaweedFS {server_version()} (`weed mini`) on 127.0.0.1 over http, "
        "one bucket per tool; repo is the sum of the object sizes in the tool's bucket",
        "The S3 server runs on the same cores: its CPU time is not in other CPU s but in "
        "the server CPU table below",
        "Before every timed step the S3 server takes 512 MiB of writes (eight at once), so "
        "that every tool meets it in the same state; its page faults per step are below",
    )


def render_server_cpu(results: list[StepResult]) -> str:
    lines = [
        "",
        "S3 server CPU seconds during each step:",
        "",
        "| step | tool | seconds | server CPU s | server page faults |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for result in results:
        cpu = result.details.get("server_cpu_seconds")
        faults = result.details.get("server_page_faults", 0)
        if isinstance(cpu, float | int) and isinstance(faults, int):
            lines.append(
                f"| {result.step.value} | {result.tool} | {result.seconds:,.2f} | {cpu:,.1f} "
                f"| {faults:,} |"
            )
    return "\n".join(lines) + "\n"
