"""The first backup, made again into new, empty repositories.

A first backup into S3 swung by a tenth or more from run to run on the same machine
(restic's from 17.7 to 22.2 s over seven runs, reprieve's from 8.7 to 9.6 s), so one run
of each can put the ratio on either side of a target. After the main pass's first and
unchanged backups, and before the dataset changes, every tool makes ``FIRST_RUNS - 1``
more first backups of the same data, each into a new repository (with S3, a new bucket),
tools taking turns; the ratio is of the medians of all of a tool's runs, the main pass's
included. The main table keeps the main pass's figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bench.peers import Runner, Step, StepResult, backup, init
from bench.report import REFERENCE

FIRST_RUNS = 3


@dataclass(frozen=True)
class FirstRuns:
    """Every first backup of each tool, the main pass's first."""

    runs: dict[str, list[StepResult]]

    def seconds(self, tool: str) -> list[float]:
        return [r.seconds for r in self.runs[tool]]

    def median(self, tool: str) -> float:
        return statistics.median(self.seconds(tool))

    def ratio(self, tool: str) -> float | None:
        """The tool's median seconds over reprieve's (above 1: reprieve faster)."""
        if tool == REFERENCE or REFERENCE not in self.runs:
            return None
        return self.median(tool) / self.median(REFERENCE)

    def to_json(self) -> dict[str, object]:
        return {
            tool: {
                "seconds": self.seconds(tool),
                "cpu_seconds": [r.cpu_seconds for r in results],
                "median_seconds": self.median(tool),
                "reprieve_speed_ratio": self.ratio(tool),
                "runs": [{**asdict(r), "step": r.step.value} for r in results],
            }
            for tool, results in self.runs.items()
        }


def first_again(
    first: list[StepResult],
    fresh: Callable[[int], list[Runner]],
    runs: int,
    done: Callable[[StepResult], StepResult],
) -> FirstRuns:
    """``first`` (the main pass's first backups) and ``runs - 1`` more per tool; ``fresh(n)``
    gives round ``n``'s runners, each with a new, empty repository."""
    by_tool = {r.tool: [r] for r in first}
    for round_number in range(2, runs + 1):
        for runner in fresh(round_number):
            init(runner)
            by_tool[runner.name].append(done(backup(runner, Step.FIRST)))
    return FirstRuns(by_tool)


def render_first_runs(result: FirstRuns) -> str:
    lines = [
        "",
        "## First backup, every run",
        "",
        f"Each tool made {max(len(r) for r in result.runs.values())} first backups of the same "
        "data, each into a new, empty repository, tools taking turns (the first is the main "
        f"table's). {REFERENCE} x is the tool's median seconds over {REFERENCE}'s.",
        "",
        f"| tool | seconds, in order | CPU s, in order | median s | {REFERENCE} x |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for tool, results in result.runs.items():
        ratio = result.ratio(tool)
        lines.append(
            f"| {tool} | {', '.join(f'{r.seconds:.2f}' for r in results)} "
            f"| {', '.join(f'{r.cpu_seconds:.1f}' for r in results)} "
            f"| {result.median(tool):.2f} | {'—' if ratio is None else f'{ratio:.2f}x'} |"
        )
    return "\n".join(lines) + "\n"
