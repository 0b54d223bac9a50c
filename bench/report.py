"""The benchmark report: one Markdown page for people and the same figures as JSON.

Throughput is the dataset's size divided by the step's wall time, whatever the tool
actually had to read: for the unchanged and the 2%-change backups it says how fast a tool
gets a full, current recovery point of the whole tree. Speed ratios divide reprieve's
throughput by the peer's (above 1: reprieve is faster); size ratios divide reprieve's
repository by the peer's (below 1: reprieve's is smaller). Figures are comparable only
within one report: the same data, machine and run.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.peers import Step, StepResult

MB = 1_000_000
MiB = 1024 * 1024
REFERENCE = "reprieve"
# Other processes using more than this many cores on average during a step disturb it.
INTERFERENCE_CORES = 0.25


@dataclass(frozen=True)
class DatasetSummary:
    seed: int
    requested_bytes: int
    base_bytes: int
    base_files: int
    bytes_by_part: dict[str, int]
    mutated_bytes: int
    changed_total_bytes: int


@dataclass(frozen=True)
class Report:
    started_utc: str
    machine: dict[str, object]
    versions: dict[str, str]
    dataset: DatasetSummary
    results: list[StepResult]
    # Lines about the setup that the figures depend on, e.g. where the repositories live.
    notes: tuple[str, ...] = ()

    def data_bytes(self, step: Step) -> int | None:
        if step is Step.INIT:
            return None
        if step in (Step.FIRST, Step.UNCHANGED):
            return self.dataset.base_bytes
        return self.dataset.changed_total_bytes

    def throughput(self, result: StepResult) -> float | None:
        size = self.data_bytes(result.step)
        if size is None or result.seconds <= 0:
            return None
        return size / MB / result.seconds

    def find(self, tool: str, step: Step) -> StepResult | None:
        return next((r for r in self.results if r.tool == tool and r.step is step), None)

    def speed_ratio(self, result: StepResult) -> float | None:
        reference = self.find(REFERENCE, result.step)
        if result.tool == REFERENCE or reference is None:
            return None
        ours, theirs = self.throughput(reference), self.throughput(result)
        return ours / theirs if ours and theirs else None

    def disturbed(self) -> list[StepResult]:
        limit = INTERFERENCE_CORES
        return [r for r in self.results if r.other_cpu_seconds > limit * r.seconds]

    def final_repo_bytes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for result in self.results:
            if result.repo_bytes is not None and result.step is not Step.RESTORE:
                sizes[result.tool] = result.repo_bytes
        return sizes


def machine_info() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gib": round(memory / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def render_markdown(report: Report) -> str:
    m, d = report.machine, report.dataset
    tools = list(dict.fromkeys(r.tool for r in report.results))
    lines = [
        f"# reprieve benchmark, {report.started_utc}",
        "",
        f"- Machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, "
        f"{m['memory_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}",
        "- Tools: " + "; ".join(f"{t}: {report.versions.get(t, 'unknown')}" for t in tools),
        f"- Dataset: {d.base_bytes / MiB:,.0f} MiB in {d.base_files:,} files (seed {d.seed}; "
        + ", ".join(f"{k} {v / MiB:,.0f} MiB" for k, v in sorted(d.bytes_by_part.items()))
        + ")",
        f"- Change between backups: {d.mutated_bytes / MiB:,.1f} MiB written "
        f"({100 * d.mutated_bytes / d.base_bytes:.1f}% of the data); "
        f"{d.changed_total_bytes / MiB:,.0f} MiB after the change",
        *(f"- {note}" for note in report.notes),
        "",
        "MB/s is the whole dataset (10^6 bytes) over the step's wall time; CPU s is the tool's "
        "user and system time, other CPU s what the rest of the machine used meanwhile; peak is "
        "the largest resident set (ru_maxrss); repo is the repository's size on disk after the "
        f"step; {REFERENCE} x is {REFERENCE}'s MB/s over the tool's (above 1: {REFERENCE} "
        "faster).",
        "",
    ]
    disturbed = report.disturbed()
    if disturbed:
        lines += [
            f"**Warning:** other processes used more than {INTERFERENCE_CORES} cores during "
            + ", ".join(f"{r.tool} {r.step.value}" for r in disturbed)
            + "; those figures are not comparable. Rerun on a quiet machine.",
            "",
        ]
    lines += [
        f"| step | tool | seconds | MB/s | CPU s | other CPU s | peak MiB | repo MiB "
        f"| {REFERENCE} x |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step in Step:
        for result in (r for r in report.results if r.step is step):
            repo = None if result.repo_bytes is None else result.repo_bytes / MiB
            lines.append(
                f"| {step.value} | {result.tool} | {result.seconds:,.2f} "
                f"| {_num(report.throughput(result))} | {result.cpu_seconds:,.1f} "
                f"| {result.other_cpu_seconds:,.1f} "
                f"| {result.peak_rss_kib / 1024:,.0f} | {_num(repo)} "
                f"| {_ratio(report.speed_ratio(result))} |"
            )
    sizes = report.final_repo_bytes()
    ours = sizes.get(REFERENCE)
    lines += [
        "",
        f"Repository size after the last backup ({REFERENCE} ÷ tool below 1: "
        f"{REFERENCE}'s is smaller):",
        "",
        f"| tool | repo MiB | % of data | {REFERENCE} ÷ tool |",
        "| --- | ---: | ---: | ---: |",
    ]
    for tool, size in sizes.items():
        ratio = ours / size if ours is not None and tool != REFERENCE and size else None
        lines.append(
            f"| {tool} | {size / MiB:,.1f} | {100 * size / d.changed_total_bytes:.1f}% "
            f"| {_ratio(ratio)} |"
        )
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    results = []
    for result in report.results:
        row = asdict(result)
        row["step"] = result.step.value
        row["mb_per_s"] = report.throughput(result)
        row["reprieve_speed_ratio"] = report.speed_ratio(result)
        results.append(row)
    sizes = report.final_repo_bytes()
    ours = sizes.get(REFERENCE)
    document = {
        "started_utc": report.started_utc,
        "machine": report.machine,
        "versions": report.versions,
        "notes": list(report.notes),
        "dataset": asdict(report.dataset),
        "results": results,
        "final_repo_bytes": sizes,
        "disturbed_steps": [[r.tool, r.step.value] for r in report.disturbed()],
        "reprieve_size_ratio": {
            tool: ours / size for tool, size in sizes.items() if ours and tool != REFERENCE
        },
    }
    return json.dumps(document, indent=2) + "\n"


def write(
    report: Report,
    folder: Path,
    stamp: str,
    extra_markdown: str = "",
    extra_json: dict[str, object] | None = None,
) -> tuple[Path, Path]:
    """Write ``STAMP.md`` and ``STAMP.json``; extra sections go after the report's own."""
    folder.mkdir(parents=True, exist_ok=True)
    markdown, data = folder / f"{stamp}.md", folder / f"{stamp}.json"
    markdown.write_text(render_markdown(report) + extra_markdown)
    document = json.loads(to_json(report))
    document.update(extra_json or {})
    data.write_text(json.dumps(document, indent=2) + "\n")
    return markdown, data
