"""One runner per tool, all driven through the same steps.

Each runner turns a step (init, backup number N, restore into a folder) into a command
line and an environment; ``init``, ``backup`` and ``restore`` below time those commands
the same way for every tool. Every tool gets its own cache and config folders inside the
work folder, and inherits none of the user's ``REPRIEVE_*``, ``RESTIC_*`` or ``BORG_*``
settings, so earlier runs and local configuration cannot change the figures. Repository
sizes count the repository folder only, not the tools' local caches.
"""

from __future__ import annotations

import abc
import compileall
import enum
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from bench.measure import BenchError, Measured, run_measured, tree_bytes, verify_tree, warm_cache

PASSWORD = "bench-passphrase-not-secret"
_FOREIGN_ENV_PREFIXES = ("REPRIEVE_", "RESTIC_", "BORG_")


class Step(enum.Enum):
    INIT = "init"
    FIRST = "first backup"
    UNCHANGED = "unchanged re-backup"
    CHANGED = "backup after 2% change"
    RESTORE = "full restore"


@dataclass(frozen=True)
class StepResult:
    tool: str
    step: Step
    seconds: float
    cpu_seconds: float
    peak_rss_kib: int
    other_cpu_seconds: float
    repo_bytes: int | None
    details: dict[str, object] = field(default_factory=dict)


class Runner(abc.ABC):
    name: ClassVar[str]

    def __init__(self, data: Path, workdir: Path) -> None:
        self.data = data.resolve()
        self.repo = workdir / "repos" / self.name
        self.home = workdir / "home" / self.name
        self.logs = workdir / "logs"
        self.backups = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV_PREFIXES)}
        for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
            env[var] = str(self.home / var.removeprefix("XDG_").removesuffix("_HOME").lower())
        env.update(self.tool_env())
        return env

    @abc.abstractmethod
    def tool_env(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def version_cmd(self) -> list[str]: ...

    @abc.abstractmethod
    def init_cmd(self) -> list[str]: ...

    @abc.abstractmethod
    def backup_cmd(self, number: int) -> list[str]: ...

    @abc.abstractmethod
    def restore_cmd(self, target: Path) -> list[str]: ...

    def restore_cwd(self, target: Path) -> Path | None:
        return None

    def repo_bytes(self) -> int:
        """The repository's size after a step: its folder's, for a local repository."""
        return tree_bytes(self.repo)

    def step_details(self) -> dict[str, object]:
        """Figures about the last command beyond the tool's own report (none by default)."""
        return {}

    def restored_root(self, target: Path) -> Path:
        """Where the data folder lands: its absolute path, re-rooted at ``target``."""
        return target / self.data.relative_to(self.data.anchor)

    def parse_backup(self, stdout: str) -> dict[str, object]:
        """The tool's own account of a backup: its JSON output, or the last JSON line of it."""
        for candidate in [stdout, *reversed(stdout.strip().splitlines())]:
            try:
                value = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
        return {}

    def version(self) -> str:
        try:
            done = subprocess.run(
                self.version_cmd(), capture_output=True, text=True, env=self.env(), check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"

    def run(self, label: str, cmd: list[str], cwd: Path | None = None) -> Measured:
        return run_measured(
            cmd, env=self.env(), cwd=cwd, log=self.logs / f"{self.name}-{label}.err"
        )


def compile_reprieve() -> None:
    """Write reprieve's bytecode, as installing a wheel does. A checkout
    installed in editable mode has none, and with PYTHONDONTWRITEBYTECODE set
    every run would compile every module it imports again."""
    spec = importlib.util.find_spec("reprieve")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


class Reprieve(Runner):
    name = "reprieve"

    def __init__(self, data: Path, workdir: Path) -> None:
        super().__init__(data, workdir)
        self.point: str | None = None

    def executable(self) -> str:
        beside = Path(sys.executable).parent / "reprieve"
        return str(beside) if beside.exists() else (shutil.which("reprieve") or "reprieve")

    def tool_env(self) -> dict[str, str]:
        # Its catalog in the run's folder, made by `vault init` as a user's
        # would be, and never the user's own.
        return {"REPRIEVE_PASSWORD": PASSWORD, "REPRIEVE_HOME": str(self.home / "reprieve")}

    def vault(self) -> str:
        return str(self.repo)

    def version_cmd(self) -> list[str]:
        return [self.executable(), "--version"]

    def init_cmd(self) -> list[str]:
        return [self.executable(), "vault", "init", "--vault", self.vault()]

    def backup_cmd(self, number: int) -> list[str]:
        vault = ["--vault", self.vault(), "--resource", "bench", "--json"]
        return [self.executable(), "backup", "files", str(self.data), *vault]

    def parse_backup(self, stdout: str) -> dict[str, object]:
        report = super().parse_backup(stdout)
        point = report.get("point")
        if not isinstance(point, str) or not point:
            raise BenchError(f"reprieve backup printed no recovery point in its JSON: {stdout!r}")
        self.point = point
        return report

    def restore_cmd(self, target: Path) -> list[str]:
        if self.point is None:
            raise BenchError("reprieve restore needs a backup first")
        vault = ["--vault", self.vault(), "--target", str(target)]
        return [self.executable(), "restore", self.point, *vault]


class Restic(Runner):
    name = "restic"

    def tool_env(self) -> dict[str, str]:
        return {"RESTIC_PASSWORD": PASSWORD}

    def version_cmd(self) -> list[str]:
        return ["restic", "version"]

    def repository(self) -> str:
        return str(self.repo)

    def _repo_args(self) -> list[str]:
        return ["--repo", self.repository(), "--cache-dir", str(self.home / "restic-cache")]

    def init_cmd(self) -> list[str]:
        # Format 2 is what enables compression (mode "auto" by default for backups).
        return ["restic", "init", *self._repo_args(), "--repository-version", "2"]

    def backup_cmd(self, number: int) -> list[str]:
        # A fixed host name keeps the parent-snapshot lookup independent of the machine.
        options = ["--host", "bench", "--json"]
        return ["restic", "backup", *self._repo_args(), *options, str(self.data)]

    def restore_cmd(self, target: Path) -> list[str]:
        return ["restic", "restore", "latest", *self._repo_args(), "--target", str(target)]


class Borg(Runner):
    name = "borg"

    def tool_env(self) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_DISPLAY_PASSPHRASE": "no",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_BASE_DIR": str(self.home / "borg-base"),
        }

    def version_cmd(self) -> list[str]:
        return ["borg", "--version"]

    def init_cmd(self) -> list[str]:
        return ["borg", "init", "--encryption=repokey-blake2", str(self.repo)]

    def backup_cmd(self, number: int) -> list[str]:
        archive = f"{self.repo}::snap{number}"
        return ["borg", "create", "--compression", "zstd,3", "--json", archive, str(self.data)]

    def restore_cmd(self, target: Path) -> list[str]:
        return ["borg", "extract", f"{self.repo}::snap{self.backups}"]

    def restore_cwd(self, target: Path) -> Path | None:
        return target

    def parse_backup(self, stdout: str) -> dict[str, object]:
        try:
            report = json.loads(stdout)
        except json.JSONDecodeError:
            return {}
        archive = report.get("archive", {}) if isinstance(report, dict) else {}
        stats = archive.get("stats", {}) if isinstance(archive, dict) else {}
        return stats if isinstance(stats, dict) else {}


RUNNERS: dict[str, type[Runner]] = {r.name: r for r in (Reprieve, Restic, Borg)}


def _result(runner: Runner, step: Step, done: Measured, details: dict[str, object]) -> StepResult:
    return StepResult(
        tool=runner.name,
        step=step,
        seconds=done.seconds,
        cpu_seconds=done.cpu_seconds,
        peak_rss_kib=done.peak_rss_kib,
        other_cpu_seconds=done.other_cpu_seconds,
        repo_bytes=runner.repo_bytes(),
        details={**details, **runner.step_details()},
    )


def init(runner: Runner) -> StepResult:
    runner.repo.parent.mkdir(parents=True, exist_ok=True)
    runner.home.mkdir(parents=True, exist_ok=True)
    done = runner.run("init", runner.init_cmd())
    return _result(runner, Step.INIT, done, {})


def _settle(folder: Path) -> None:
    """Warm the page cache with ``folder`` and flush dirty pages, so that the previous step's
    writeback does not run on the clock of this one."""
    warm_cache(folder)
    os.sync()


def backup(runner: Runner, step: Step) -> StepResult:
    _settle(runner.data)
    runner.backups += 1
    done = runner.run(f"backup{runner.backups}", runner.backup_cmd(runner.backups))
    details = runner.parse_backup(done.stdout)
    return _result(runner, step, done, details)


def restore(runner: Runner, target: Path) -> StepResult:
    """Restore the latest backup into the empty folder ``target``, verify it, remove it."""
    target.mkdir(parents=True)
    _settle(runner.repo)
    done = runner.run("restore", runner.restore_cmd(target), cwd=runner.restore_cwd(target))
    files = verify_tree(runner.data, runner.restored_root(target))
    shutil.rmtree(target)
    return _result(runner, Step.RESTORE, done, {"verified_files": files})
