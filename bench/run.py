"""Benchmark reprieve against restic and borg on one generated dataset.

    python bench/run.py [--size 2G] [--seed 1] [--tools reprieve,restic,borg] [--first-runs 3]
                        [--workdir DIR] [--keep] [--results bench/results]
    python bench/run.py --s3 [--no-copy] [--tools reprieve,reprieve-locked,restic] [...]

Every tool sees identical data at every step: the dataset is generated once, all tools
make their first and unchanged backups of it, the dataset is changed once (about 2% of
its bytes), and then all tools back up the changed tree and restore it. Each restore is
compared file by file with the source. Before the change, every tool makes more first
backups into new repositories, and the first-backup ratio is of medians (see
``repeat.py``). The report goes to stdout and, as Markdown and
JSON, to the results folder; progress goes to stderr.

With ``--s3`` the repositories live in S3 instead: one SeaweedFS gateway on 127.0.0.1 for
the run, a bucket per tool (see ``s3mode.py``; borg has no S3 backend). reprieve then also
copies a vault to a second gateway, timed against a plain S3 copy of the same objects (see
``s3copy.py``; ``--no-copy`` skips this). Those reports are named ``<UTC>-s3``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the checkout's root importable so ``bench.*`` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dataset import FULL_SCALE, generate, mutate, parse_size
from bench.measure import BenchError, tree_bytes
from bench.peers import (
    RUNNERS,
    Runner,
    Step,
    StepResult,
    backup,
    compile_reprieve,
    init,
    restore,
)
from bench.repeat import FIRST_RUNS, FirstRuns, first_again, render_first_runs
from bench.report import DatasetSummary, Report, machine_info, render_markdown, write
from bench.s3copy import CopyResult, copy_bench, render_copy
from bench.s3mode import (
    S3_RUNNERS,
    Seaweed,
    render_server_cpu,
    s3_notes,
    s3_runners,
    seaweed_server,
)

CHANGE_FRACTION = 0.02


def _tools(text: str) -> list[str]:
    tools = [t.strip() for t in text.split(",") if t.strip()]
    known = {**RUNNERS, **S3_RUNNERS}
    unknown = [t for t in tools if t not in known]
    if unknown or not tools:
        raise argparse.ArgumentTypeError(f"unknown tools {unknown}; choose from {', '.join(known)}")
    return list(dict.fromkeys(tools))


def _check_tools(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    available = list(S3_RUNNERS) if args.s3 else list(RUNNERS)
    if args.tools is None:
        args.tools = available
    elif unsupported := [t for t in args.tools if t not in available]:
        mode = "--s3" if args.s3 else "a local run"
        parser.error(f"{mode} does not support {', '.join(unsupported)}; choose from {available}")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=_size, default=FULL_SCALE, help="dataset size (2G)")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (1)")
    parser.add_argument("--tools", type=_tools, help="comma-separated (all the mode supports)")
    parser.add_argument(
        "--first-runs",
        type=int,
        default=FIRST_RUNS,
        help=f"first backups per tool, each into a new repository ({FIRST_RUNS})",
    )
    parser.add_argument("--s3", action="store_true", help="keep the repositories in S3")
    parser.add_argument("--no-copy", action="store_true", help="with --s3: skip the copy test")
    parser.add_argument(
        "--workdir", type=Path, help="empty or new folder for data and repositories (temp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="folder for the .md and .json reports (bench/results)",
    )
    args = parser.parse_args(argv)
    _check_tools(parser, args)
    if args.first_runs < 1:
        parser.error("--first-runs must be at least 1")
    return args


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _done(result: StepResult) -> StepResult:
    _progress(
        f"{result.tool}: {result.step.value} in {result.seconds:.2f} s, "
        f"peak {result.peak_rss_kib / 1024:.0f} MiB"
    )
    return result


def run_all(
    args: argparse.Namespace, workdir: Path, started: str, server: Seaweed | None = None
) -> tuple[Report, FirstRuns]:
    """Every step for every tool; with ``server``, the repositories live in its buckets."""
    data = workdir / "data"
    _progress(f"generating {args.size / 2**20:,.0f} MiB dataset (seed {args.seed}) in {data}")
    info = generate(data, args.size, args.seed)
    _progress(f"dataset ready: {info.total_bytes / 2**20:,.0f} MiB in {info.files:,} files")

    def fresh(round_number: int) -> list[Runner]:
        again = workdir / f"again-{round_number}"
        if server is None:
            return [RUNNERS[name](data, again) for name in args.tools]
        return s3_runners(server, args.tools, data, again, f"-{round_number}")

    runners: list[Runner]
    notes: tuple[str, ...]
    if server is None:
        runners, notes = [RUNNERS[name](data, workdir) for name in args.tools], ()
    else:
        runners, notes = s3_runners(server, args.tools, data, workdir), s3_notes(server)
    compile_reprieve()
    versions = {r.name: r.version() for r in runners}
    results: list[StepResult] = []

    results += [_done(init(r)) for r in runners]
    firsts = [_done(backup(r, Step.FIRST)) for r in runners]
    results += firsts
    results += [_done(backup(r, Step.UNCHANGED)) for r in runners]
    first_runs = first_again(firsts, fresh, args.first_runs, _done)

    mutated = mutate(data, CHANGE_FRACTION, args.seed)
    changed_total = tree_bytes(data)
    _progress(f"changed {mutated / 2**20:,.1f} MiB of the dataset")
    results += [_done(backup(r, Step.CHANGED)) for r in runners]
    results += [_done(restore(r, workdir / "restore" / r.name)) for r in runners]

    dataset = DatasetSummary(
        seed=args.seed,
        requested_bytes=args.size,
        base_bytes=info.total_bytes,
        base_files=info.files,
        bytes_by_part=info.bytes_by_part,
        mutated_bytes=mutated,
        changed_total_bytes=changed_total,
    )
    return Report(started, machine_info(), versions, dataset, results, notes), first_runs


def run_s3(
    args: argparse.Namespace, workdir: Path, started: str
) -> tuple[Report, FirstRuns, CopyResult | None]:
    with seaweed_server(workdir / "seaweed" / "main") as server:
        _progress(f"S3 server at {server.endpoint}")
        report, first_runs = run_all(args, workdir, started, server)
        copy = None
        if "reprieve" in args.tools and not args.no_copy:
            copy = copy_bench(workdir / "data", workdir, server, _progress)
    return report, first_runs, copy


def _prepare_workdir(requested: Path | None) -> tuple[Path, bool]:
    """The work folder and whether it is ours to delete entirely."""
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="reprieve-bench-")), True
    created = not requested.exists()
    requested.mkdir(parents=True, exist_ok=True)
    if any(requested.iterdir()):
        raise BenchError(f"work folder is not empty: {requested}")
    return requested.resolve(), created


def _cleanup(workdir: Path, owned: bool) -> None:
    if owned:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    for name in ("data", "repos", "restore", "home", "logs", "seaweed", "copy"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for again in workdir.glob("again-*"):
        shutil.rmtree(again, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    now = datetime.now(UTC)
    started, stamp = now.isoformat(timespec="seconds"), now.strftime("%Y%m%dT%H%M%SZ")
    try:
        workdir, owned = _prepare_workdir(args.workdir)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    copy: CopyResult | None = None
    try:
        if args.s3:
            report, first_runs, copy = run_s3(args, workdir, started)
        else:
            report, first_runs = run_all(args, workdir, started)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        if not args.keep:
            print("bench: rerun with --keep to inspect the work folder", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            _progress(f"kept the work folder {workdir}")
        else:
            _cleanup(workdir, owned)
    extra_markdown = render_first_runs(first_runs)
    extra_json: dict[str, object] = {"first_backup_runs": first_runs.to_json()}
    if args.s3:
        extra_markdown += render_server_cpu(report.results)
        extra_markdown += render_copy(copy) if copy is not None else ""
        extra_json.update(mode="s3", copy=None if copy is None else copy.to_json())
        stamp += "-s3"
    print(render_markdown(report) + extra_markdown)
    markdown, data = write(report, args.results, stamp, extra_markdown, extra_json)
    _progress(f"wrote {markdown} and {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
