"""A backup or prune killed with SIGKILL at any moment leaves a consistent vault.

The write order (packs, then index, then the point; prune: new packs, new
index, then deletions) is what makes this hold; these tests kill real
processes at seeded random moments, and prune also right as each of its
phases begins, then verify every byte, rerun, and restore. The kill at
random moments runs on a folder only; the kill midway runs on S3 too.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FAST_KDF, Result, folder_only, run_cli, shared_vault_base
from stores import VaultStore, copy_vault, remove_vault
from support import digests, random_file, restored_at, start_cli, text_file

MIB = 1024 * 1024
BACKUP_TRIALS = 10
PRUNE_RANDOM_TRIALS = 6

pytestmark = pytest.mark.slow


def must(what: str, *args: str | Path) -> Result:
    result = run_cli(*args)
    assert result.code == 0, (
        f"{what}: `{args[0]}` exit {result.code}: {result.stdout}{result.stderr}"
    )
    return result


def spread(rng: random.Random, count: int, longest: float) -> list[float]:
    """Seeded delays covering 0..longest evenly, one at random in each slice."""
    return [longest * (i + rng.random()) / count for i in range(count)]


def kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the process; True when it was still running."""
    proc.kill()
    return proc.wait() == -signal.SIGKILL


def names(vault: str, prefix: str) -> set[str]:
    return set(VaultStore.at(vault).names(prefix))


def locks_in(vault: str) -> set[str]:
    # A folder's `.tmp-*` file is a lock write the kill interrupted: not a lock
    # (the backend never lists it), and prune removes such debris once it is old.
    return {name for name in names(vault, "locks/") if not name.startswith("locks/.tmp-")}


@dataclass(frozen=True)
class Dataset:
    root: Path
    source: Path
    digests: dict[str, str]
    empty_vault: str
    backup_seconds: float


@pytest.fixture(scope="module")
def dataset(
    storage: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Dataset:
    """About 80 MiB of random, log-like, and small files, and how long a backup takes."""
    root = tmp_path_factory.mktemp("kill")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(home))  # as the autouse isolation does for each test
        return _make_dataset(root, shared_vault_base(storage, request, env, root))


def _make_dataset(root: Path, vault_base: str) -> Dataset:
    rng = random.Random(4242)
    source = root / "data"
    for i in range(12):
        random_file(source / "random" / f"r{i:02}.bin", rng, 3 * MIB + rng.randrange(MIB))
    for i in range(5):
        text_file(source / "logs" / f"app{i}.log", rng, 8 * MIB)
    for i in range(150):
        random_file(source / "small" / f"d{i % 10}" / f"f{i}.dat", rng, rng.randrange(1, 32768))
    empty = f"{vault_base}/empty-vault"
    must("setup", "vault", "init", "--vault", empty, *FAST_KDF)

    reference = f"{vault_base}/reference-vault"
    copy_vault(empty, reference)
    started = time.monotonic()
    must("reference", "backup", "files", source, "--vault", reference, "--resource", "app")
    seconds = time.monotonic() - started
    remove_vault(reference)
    return Dataset(root, source, digests(source), empty, seconds)


# Folder only: ten kill-and-verify rounds of 80 MiB take 40 s on the test S3 gateway.
@folder_only
def test_backup_killed_at_random_moments_leaves_vault_consistent(
    dataset: Dataset, vault_base: str, tmp_path: Path
) -> None:
    rng = random.Random(1001)
    killed = stale_locks = 0
    for trial, delay in enumerate(spread(rng, BACKUP_TRIALS, dataset.backup_seconds)):
        what = f"trial {trial}, killed {delay:.2f}s into a {dataset.backup_seconds:.2f}s backup"
        vault = f"{vault_base}/vault"
        copy_vault(dataset.empty_vault, vault)
        proc = start_cli("backup", "files", dataset.source, "--vault", vault, "--resource", "app")
        time.sleep(delay)
        killed += kill(proc)
        stale_locks += bool(locks_in(vault))

        check = run_cli("check", "--vault", vault, "--read-data")
        assert check.code == 0, f"{what}: {check.stdout}{check.stderr}"
        # Prune's exclusive lock conflicts with the dead backup's lock unless it is seen as stale.
        must(what, "prune", "--vault", vault)
        backup = must(
            what, "backup", "files", dataset.source, "--vault", vault, "--resource", "app", "--json"
        )
        target = tmp_path / "restore"
        must(what, "restore", backup.json()["point"], "--vault", vault, "--target", target)
        assert digests(restored_at(target, dataset.source)) == dataset.digests, what
        assert not locks_in(vault), f"{what}: a lock was left behind"
        remove_vault(vault)
        shutil.rmtree(target)
    # The trials must really interrupt backups, some while they hold their lock.
    assert killed >= BACKUP_TRIALS // 3, f"only {killed} of {BACKUP_TRIALS} backups were killed"
    assert stale_locks >= 1, "no trial left a stale lock behind"


@dataclass(frozen=True)
class Forgotten:
    """A vault whose forgotten points leave prune packs to delete and to repack."""

    vault: str
    sources: dict[str, Path]
    contents: dict[str, dict[str, str]]
    """Per remaining point id, the digests of its source when it was taken."""
    prune_seconds: float
    index_files: set[str]
    pruned_packs: set[str]


@pytest.fixture(scope="module")
def forgotten(storage: str, request: pytest.FixtureRequest, dataset: Dataset) -> Forgotten:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(dataset.root / "home"))
        return _forget_some(dataset, shared_vault_base(storage, request, env, dataset.root))


def _forget_some(dataset: Dataset, vault_base: str) -> Forgotten:
    root = dataset.root / "prune"
    rng = random.Random(777)
    app = root / "app"
    shutil.copytree(dataset.source, app)
    etc = root / "etc"
    for i in range(20):
        text_file(etc / f"conf{i}.ini", rng, rng.randrange(100, 20000))
    vault = f"{vault_base}/prune-vault"
    copy_vault(dataset.empty_vault, vault)

    def backup(resource: str, source: Path) -> str:
        done = must(
            "setup", "backup", "files", source, "--vault", vault, "--resource", resource, "--json"
        )
        return str(done.json()["point"])

    sources: dict[str, Path] = {}
    contents: dict[str, dict[str, str]] = {}
    point = backup("etc", etc)
    sources[point], contents[point] = etc, digests(etc)
    backup("app", app)
    for i in range(8):
        random_file(app / "random" / f"r{i:02}.bin", rng, 3 * MIB)
    for i in range(4):
        random_file(app / "burst" / f"b{i}.bin", rng, 4 * MIB)
    backup("app", app)
    shutil.rmtree(app / "burst")
    for i in range(4):
        random_file(app / "random" / f"r{i:02}.bin", rng, 3 * MIB)
    point = backup("app", app)
    sources[point], contents[point] = app, digests(app)
    must("setup", "forget", "--vault", vault, "--resource", "app", "--keep-last", "1")

    plan = must("setup", "prune", "--vault", vault, "--dry-run", "--json").json()
    assert plan["packs_deleted"] >= 1 and plan["packs_repacked"] >= 1, plan

    reference = f"{vault_base}/reference-prune-vault"
    copy_vault(vault, reference)
    started = time.monotonic()
    must("reference", "prune", "--vault", reference)
    seconds = time.monotonic() - started
    pruned = names(vault, "packs/") - names(reference, "packs/")
    remove_vault(reference)
    return Forgotten(vault, sources, contents, seconds, names(vault, "index/"), pruned)


PHASES = ("writing new packs", "new index written", "deleting index files", "deleting packs")


def phase_started(forgotten: Forgotten, vault: str, phase: str) -> Callable[[], bool]:
    """A sign, visible in the vault, that prune has reached ``phase``."""
    store = VaultStore.at(vault)
    old_packs = names(forgotten.vault, "packs/")

    # In a folder a pack's temporary file counts: the pack is being written. An
    # S3 upload shows nothing until it is complete.
    def new_pack() -> bool:
        return bool(set(store.names("packs/")) - old_packs)

    def new_index() -> bool:
        return any(
            not name.startswith("index/.tmp-") and name not in forgotten.index_files
            for name in store.names("index/")
        )

    def index_deleted() -> bool:
        return bool(forgotten.index_files - set(store.names("index/")))

    def pack_deleted() -> bool:
        return bool(forgotten.pruned_packs - set(store.names("packs/")))

    signs = dict(zip(PHASES, (new_pack, new_index, index_deleted, pack_deleted), strict=True))
    return signs[phase]


def kill_when(proc: subprocess.Popen[bytes], sign: Callable[[], bool]) -> bool:
    """Poll the vault and SIGKILL the process as soon as ``sign`` holds."""
    deadline = time.monotonic() + 60
    while not sign():
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.0005)
    return kill(proc)


# Folder only: ten kill-and-verify rounds take 50 s on the test S3 gateway.
@folder_only
def test_prune_killed_at_random_moments_leaves_vault_consistent(
    dataset: Dataset, forgotten: Forgotten, vault_base: str, tmp_path: Path
) -> None:
    rng = random.Random(2002)
    delays = spread(rng, PRUNE_RANDOM_TRIALS, forgotten.prune_seconds)
    trials: list[str | float] = [*delays, *PHASES]
    killed = 0
    for trial, moment in enumerate(trials):
        vault = f"{vault_base}/vault"
        copy_vault(forgotten.vault, vault)
        proc = start_cli("prune", "--vault", vault)
        if isinstance(moment, float):
            what = (
                f"trial {trial}, killed {moment:.2f}s into a {forgotten.prune_seconds:.2f}s prune"
            )
            time.sleep(moment)
            killed += kill(proc)
        else:
            what = f"trial {trial}, killed when {moment}"
            killed += kill_when(proc, phase_started(forgotten, vault, moment))

        check = run_cli("check", "--vault", vault, "--read-data")
        assert check.code == 0, f"{what}: {check.stdout}{check.stderr}"
        for point, source in forgotten.sources.items():
            target = tmp_path / f"restore-{point[:12]}"
            must(what, "restore", point, "--vault", vault, "--target", target)
            assert digests(restored_at(target, source)) == forgotten.contents[point], what
            shutil.rmtree(target)
        # The dead prune's exclusive lock must not block the rerun that finishes its work.
        must(what, "prune", "--vault", vault)
        check = run_cli("check", "--vault", vault, "--json")
        assert check.code == 0 and not check.json()["warnings"], f"{what}: {check.stdout}"
        remove_vault(vault)
    assert killed >= len(trials) // 3, f"only {killed} of {len(trials)} prunes were killed"


def test_backup_killed_midway_is_resumed_by_the_next_without_sending_it_again(
    vault: str, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    rng = random.Random(13)
    for i in range(6):
        random_file(source / f"r{i}.bin", rng, 24 * 1024 * 1024)
    store = VaultStore.at(vault)

    def indexed() -> list[str]:
        # A folder's `.tmp-*` file is an index still being written: not yet an index.
        return [name for name in store.names("index/") if not name.startswith("index/.tmp-")]

    started = time.monotonic()
    backup = start_cli("backup", "files", source, "--vault", vault, "--resource", "app")
    # Backups index every 8 packs (~128 MiB here): wait for the first, then kill.
    while backup.poll() is None and time.monotonic() - started < 60:
        if indexed():
            break
        time.sleep(0.01)
    backup.send_signal(signal.SIGKILL)
    backup.wait()
    assert indexed(), "the kill landed before any index"
    assert not store.names("points/")

    done = run_cli("backup", "files", source, "--vault", vault, "--resource", "app", "--json")
    assert done.code == 0, done.stderr
    rerun = done.json()
    # 144 MiB of random data; the first 8 packs (~128 MiB) had arrived and been indexed.
    assert rerun["bytes_added"] < 40 * 1024 * 1024, rerun
    assert run_cli("check", "--vault", vault, "--read-data").code == 0
    target = tmp_path / "restore"
    assert run_cli("restore", rerun["point"], "--vault", vault, "--target", target).code == 0
    assert digests(restored_at(target, source)) == digests(source)
