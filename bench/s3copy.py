"""Copying a vault between two S3 services: ``reprieve copy`` against a plain S3 copy.

A second SeaweedFS gateway stands in for a second region. Vault A (bucket ``copy-source``
on the run's gateway) gets one backup of the dataset; then ``reprieve copy`` sends it to
vault B (bucket ``copy-target`` on the second gateway), made as a DR target is meant to
be made, with ``vault init --ids-from`` vault A: the same blob ids, its own data key, so
blobs move in their stored form, decrypted and re-encrypted on the way. A second copy,
to vault C (``copy-independent``), made with keys of its own, shows the general case:
every blob decompressed and hashed again under C's id key.

The baseline is the least any copy tool has to do: list vault A's bucket, GET every
object and PUT it unchanged into a new bucket on the second gateway, with boto3 and
eight threads. ``baseline ÷ reprieve`` divides the baseline's seconds by reprieve's: 1
means reprieve copies as fast as plain S3 traffic allows, above 1 that it is faster.
Both servers are warmed (``s3mode.warm``) just before each copy, and the second server's
page faults during each are recorded.

One copy of each kind swung by a tenth or more from run to run on the same machine (the
plain copy from 6.1 to 7.9 s over four runs), so reprieve's copy to an ``--ids-from``
target and the plain copy run ``REPEATS`` times each, alternating, each into a new bucket,
and the ratio is of their medians; the report lists every run.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.measure import BenchError, Measured, run_measured
from bench.peers import PASSWORD, Step, backup, init
from bench.s3mode import (
    S3_ERRORS,
    Bucket,
    S3Reprieve,
    Seaweed,
    create_bucket,
    list_objects,
    process_page_faults,
    s3_client,
    seaweed_server,
    warm,
)

MB = 1_000_000
MiB = 1024 * 1024
BASELINE_THREADS = 8
TARGET_RATIO = 0.8
REPEATS = 3

T = TypeVar("T")


@dataclass(frozen=True)
class CopyResult:
    source_objects: int
    source_bytes: int
    backup_seconds: float
    reprieve_seconds: float
    reprieve_cpu_seconds: float
    reprieve_peak_rss_kib: int
    reprieve_report: dict[str, object]
    reprieve_server_page_faults: int
    target_bytes: int
    independent_seconds: float
    independent_cpu_seconds: float
    independent_server_page_faults: int
    baseline_seconds: float
    baseline_cpu_seconds: float
    baseline_objects: int
    baseline_bytes: int
    baseline_threads: int
    baseline_server_page_faults: int
    # Every run, in order; the fields above are those of the median run.
    reprieve_runs_seconds: list[float]
    baseline_runs_seconds: list[float]

    @property
    def ratio(self) -> float:
        """Baseline seconds over reprieve's: at least ``TARGET_RATIO`` is the goal."""
        return self.baseline_seconds / self.reprieve_seconds if self.reprieve_seconds else 0.0

    @property
    def independent_ratio(self) -> float:
        seconds = self.independent_seconds
        return self.baseline_seconds / seconds if seconds else 0.0

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = asdict(self)
        document["baseline_over_reprieve_seconds"] = self.ratio
        document["baseline_over_independent_seconds"] = self.independent_ratio
        document["target_ratio"] = TARGET_RATIO
        return document


def plain_copy(source: Bucket, target: Bucket, threads: int) -> tuple[float, float, int, int]:
    """Copy every object of ``source`` into ``target`` unchanged.

    Returns wall seconds, this process's CPU seconds, objects and bytes; the listing is
    on the clock, as it is for ``reprieve copy``.
    """
    read, write = s3_client(source.server, threads), s3_client(target.server, threads)

    def one(item: tuple[str, int]) -> int:
        body: bytes = read.get_object(Bucket=source.name, Key=item[0])["Body"].read()
        write.put_object(Bucket=target.name, Key=item[0], Body=body)
        return len(body)

    started, cpu = time.perf_counter(), time.process_time()
    try:
        objects = list_objects(read, source.name)
        with ThreadPoolExecutor(threads) as pool:
            copied = sum(pool.map(one, objects))
    except S3_ERRORS as exc:
        raise BenchError(f"plain S3 copy from {source.name} failed: {exc}") from exc
    return time.perf_counter() - started, time.process_time() - cpu, len(objects), copied


def _copy_report(stdout: str) -> dict[str, Any]:
    """``reprieve copy --json``'s document; it must say that the one point was copied."""
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict) or report.get("points_copied") != 1:
        raise BenchError(f"reprieve copy did not report copying the one point: {stdout!r}")
    return report


def _on_warm_servers(first: Seaweed, second: Seaweed, measure: Callable[[], T]) -> tuple[T, int]:
    """What ``measure`` returns, run once both servers are warm, and the second server's
    page faults meanwhile (few, if the warm-up did its job)."""
    warm(first)
    warm(second)
    before = process_page_faults(second.process.pid)
    result = measure()
    return result, process_page_faults(second.process.pid) - before


class _IdsFrom(S3Reprieve):
    """A vault made with ``vault init --ids-from`` another: the DR target of a copy."""

    def __init__(self, data: Path, workdir: Path, bucket: Bucket, source: S3Reprieve) -> None:
        super().__init__(data, workdir, bucket)
        self.source = source

    def init_cmd(self) -> list[str]:
        return [*super().init_cmd(), "--ids-from", self.source.vault()]


def copy_bench(
    data: Path, workdir: Path, first: Seaweed, progress: Callable[[str], None]
) -> CopyResult:
    root = workdir / "copy"
    with seaweed_server(workdir / "seaweed" / "second") as second:
        progress(f"second S3 server at {second.endpoint}")
        source = S3Reprieve(data, root, create_bucket(first, "copy-source"))
        init(source)
        first_backup = backup(source, Step.FIRST)
        progress(f"copy: backup into vault A in {first_backup.seconds:.2f} s")

        # One operator's machine makes every vault and runs the copies: one
        # REPRIEVE_HOME (catalog, unlock hints) for all.
        def reprieve_copy(to: S3Reprieve) -> tuple[Measured, int]:
            cmd = [source.executable(), "copy", "--from", source.vault(), "--to", to.vault()]
            run = functools.partial(
                run_measured,
                [*cmd, "--json"],
                env={**source.env(), "REPRIEVE_TO_PASSWORD": PASSWORD},
                log=to.logs / "reprieve-copy.err",
            )
            done, faults = _on_warm_servers(first, second, run)
            _copy_report(done.stdout)
            progress(f"copy: reprieve copy to {to.bucket.name} in {done.seconds:.2f} s")
            return done, faults

        copies: list[tuple[Measured, int, Bucket]] = []
        plains: list[tuple[tuple[float, float, int, int], int]] = []
        for repeat in range(REPEATS):
            target = _IdsFrom(
                data,
                root / f"target-{repeat}",
                create_bucket(second, f"copy-target-{repeat}"),
                source,
            )
            target.home = source.home
            init(target)
            copies.append((*reprieve_copy(target), target.bucket))
            baseline = create_bucket(second, f"copy-baseline-{repeat}")
            plain, baseline_faults = _on_warm_servers(
                first,
                second,
                functools.partial(plain_copy, source.bucket, baseline, BASELINE_THREADS),
            )
            plains.append((plain, baseline_faults))
            progress(f"copy: plain S3 copy of {plain[2]} objects in {plain[0]:.2f} s")
        other = S3Reprieve(data, root / "other", create_bucket(second, "copy-independent"))
        other.home = source.home
        init(other)
        independent, independent_faults = reprieve_copy(other)
        done, faults, written = _median(copies, lambda c: c[0].seconds)
        (seconds, cpu, objects, copied), baseline_faults = _median(plains, lambda p: p[0][0])
        source_objects = list_objects(s3_client(first), source.bucket.name)
        return CopyResult(
            source_objects=len(source_objects),
            source_bytes=sum(size for _, size in source_objects),
            backup_seconds=first_backup.seconds,
            reprieve_seconds=done.seconds,
            reprieve_cpu_seconds=done.cpu_seconds,
            reprieve_peak_rss_kib=done.peak_rss_kib,
            reprieve_report=_copy_report(done.stdout),
            reprieve_server_page_faults=faults,
            target_bytes=written.object_bytes(),
            independent_seconds=independent.seconds,
            independent_cpu_seconds=independent.cpu_seconds,
            independent_server_page_faults=independent_faults,
            baseline_seconds=seconds,
            baseline_cpu_seconds=cpu,
            baseline_objects=objects,
            baseline_bytes=copied,
            baseline_threads=BASELINE_THREADS,
            baseline_server_page_faults=baseline_faults,
            reprieve_runs_seconds=[c[0].seconds for c in copies],
            baseline_runs_seconds=[p[0][0] for p in plains],
        )


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{seconds:.2f}" for seconds in runs) + " s"


def _median(runs: list[T], seconds: Callable[[T], float]) -> T:
    """The run whose time is the median (the lower of the middle two for an even count)."""
    ordered = sorted(runs, key=seconds)
    return ordered[(len(ordered) - 1) // 2]


def render_copy(result: CopyResult) -> str:
    source_mb = result.source_bytes / MB
    verdict = "meets" if result.ratio >= TARGET_RATIO else "misses"
    return "\n".join(
        [
            "",
            "## Copy between two S3 services",
            "",
            f"Vault A holds one backup of the dataset: {result.source_objects:,} objects, "
            f"{result.source_bytes / MiB:,.1f} MiB (backed up in {result.backup_seconds:.2f} s)."
            " MB/s is vault A's size over the copy's wall time; written is what landed in the "
            "second service's bucket; faults are the second server's page faults during the "
            "copy (both servers are warmed just before each).",
            "",
            f"reprieve's copy to a vault made `--ids-from` A and the plain copy ran "
            f"{len(result.reprieve_runs_seconds)} times each, alternating, each into a new "
            f"bucket: reprieve {_seconds(result.reprieve_runs_seconds)}, the plain copy "
            f"{_seconds(result.baseline_runs_seconds)}. Their rows below are the median runs; "
            "the copy to a vault with keys of its own ran once.",
            "",
            "| method | seconds | MB/s | CPU s | peak MiB | written MiB | faults |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| reprieve copy to a vault made `--ids-from` A | {result.reprieve_seconds:,.2f} "
            f"| {source_mb / result.reprieve_seconds:,.1f} "
            f"| {result.reprieve_cpu_seconds:,.1f} | {result.reprieve_peak_rss_kib / 1024:,.0f} "
            f"| {result.target_bytes / MiB:,.1f} | {result.reprieve_server_page_faults:,} |",
            f"| reprieve copy to a vault with keys of its own | "
            f"{result.independent_seconds:,.2f} | {source_mb / result.independent_seconds:,.1f} "
            f"| {result.independent_cpu_seconds:,.1f} | — | — "
            f"| {result.independent_server_page_faults:,} |",
            f"| plain S3 copy (boto3, {result.baseline_threads} threads) "
            f"| {result.baseline_seconds:,.2f} | {source_mb / result.baseline_seconds:,.1f} "
            f"| {result.baseline_cpu_seconds:,.1f} | — | {result.baseline_bytes / MiB:,.1f} "
            f"| {result.baseline_server_page_faults:,} |",
            "",
            f"Baseline seconds ÷ reprieve seconds, medians: {result.ratio:.2f} ({verdict} the "
            f"target of {TARGET_RATIO}); to a vault with keys of its own "
            f"{result.independent_ratio:.2f}.",
            "",
        ]
    )
