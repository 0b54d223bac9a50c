"""A damaged vault is found by `check` and never restored as if it were whole.

Every stored object is named by the hash of its bytes and every blob is
authenticated, so one flipped byte anywhere in a pack, an index file, or a
point must surface as damage (exit 3) that names the object, and a restore
must either fail with one clear line or produce exactly the original bytes.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import digests, flip_byte, one_line, random_file, restored_at, text_file

from conftest import FAST_KDF, ok, run_cli


@dataclass(frozen=True)
class Backed:
    vault: Path
    source: Path
    points: list[str]
    contents: dict[str, dict[str, str]]
    """Per point id, the digests of the source when that point was taken."""
    objects: dict[str, list[Path]]
    """Per folder (packs, index, points), the files written by each backup, in order."""


def _listing(vault: Path, folder: str) -> set[Path]:
    return {p for p in (vault / folder).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def backed(tmp_path_factory: pytest.TempPathFactory) -> Backed:
    """Two points of a small tree of random and compressible files."""
    root = tmp_path_factory.mktemp("corruption")
    env = {"HOME": str(root)}
    rng = random.Random(20240501)
    source = root / "data"
    for i in range(3):
        random_file(source / "random" / f"r{i}.bin", rng, 700 * 1024 + rng.randrange(4096))
    for i in range(2):
        text_file(source / "logs" / f"app{i}.log", rng, 900 * 1024)
    for i in range(5):
        random_file(source / "small" / f"s{i}.dat", rng, rng.randrange(1, 9000))
    vault = root / "vault"
    ok("vault", "init", "--vault", vault, *FAST_KDF, env=env)

    points: list[str] = []
    contents: dict[str, dict[str, str]] = {}
    seen: dict[str, set[Path]] = {"packs": set(), "index": set(), "points": set()}
    objects: dict[str, list[Path]] = {folder: [] for folder in seen}
    for round_ in range(2):
        if round_ == 1:
            random_file(source / "random" / "r1.bin", rng, 600 * 1024)
            with (source / "logs" / "app0.log").open("ab") as log:
                log.write(b"ERROR after the first point\n" * 2000)
            random_file(source / "small" / "new.dat", rng, 300 * 1024)
        done = ok("backup", "files", source, "--vault", vault, "--resource", "app", "--json", env=env)
        point = str(done.json()["point"])
        points.append(point)
        contents[point] = digests(source)
        for folder, before in seen.items():
            now = _listing(vault, folder)
            objects[folder] += sorted(now - before, key=lambda p: p.stat().st_size)
            seen[folder] = now
    return Backed(vault, source, points, contents, objects)


def _target_object(backed: Backed, vault: Path, which: str) -> tuple[Path, str]:
    """The file to damage in the copy ``vault``, and the name check must report."""
    if which == "data pack":
        original = max(backed.objects["packs"], key=lambda p: p.stat().st_size)
    elif which == "tree pack":
        original = min(backed.objects["packs"], key=lambda p: p.stat().st_size)
    elif which == "index":
        original = backed.objects["index"][-1]
    else:
        (original,) = [p for p in backed.objects["points"] if p.name == backed.points[0]]
    return vault / original.relative_to(backed.vault), original.name[:12]


def _offset(size: int, position: str, rng: random.Random) -> int:
    return {"start": 0, "middle": size // 2, "end": size - 1}.get(position, rng.randrange(size))


@pytest.mark.parametrize("position", ["start", "middle", "end", "random"])
@pytest.mark.parametrize("which", ["data pack", "tree pack", "index", "point"])
def test_flipped_byte_in_any_object_is_found_and_never_restored_silently(
    backed: Backed, tmp_path: Path, which: str, position: str
) -> None:
    vault = tmp_path / "vault"
    shutil.copytree(backed.vault, vault)
    damaged, name = _target_object(backed, vault, which)
    offset = _offset(damaged.stat().st_size, position, random.Random(f"{which}/{position}"))
    flip_byte(damaged, offset)

    check = run_cli("check", "--vault", vault, "--read-data", "--json")
    assert check.code == 3, f"flip at {offset} of {damaged}: {check.stdout} {check.stderr}"
    one_line(check)
    report = check.json()
    assert report["ok"] is False
    assert any(name in error for error in report["errors"]), report["errors"]

    lost = set(report["damaged_points"])
    if which == "point":
        lost.add(backed.points[0])
    assert lost, "check must say which points the damage reaches"
    for point in backed.points:
        target = tmp_path / f"restore-{point[:12]}"
        result = run_cli("restore", point, "--vault", vault, "--target", target)
        want = backed.contents[point]
        got = digests(restored_at(target, backed.source)) if target.exists() else {}
        if point in lost:
            assert result.code == 3, f"restore of damaged point {point[:12]}: {result.stderr}"
            one_line(result)
            # What a failed restore leaves behind is whole, never half-written.
            wrong = {p for p, d in got.items() if d != "dir" and want.get(p) != d}
            assert not wrong, f"restore left damaged files {sorted(wrong)}"
        else:
            assert result.code == 0, f"restore of undamaged point {point[:12]}: {result.stderr}"
            assert got == want


def test_wrong_password_is_refused_with_one_line(vault: Path, tmp_path: Path) -> None:
    source = tmp_path / "data"
    random_file(source / "a.bin", random.Random(4), 5000)
    point = ok("backup", "files", source, "--vault", vault, "--resource", "r", "--json")
    target = tmp_path / "restore"

    for args in (
        ("points", "list", "--vault", vault),
        ("check", "--vault", vault, "--read-data"),
        ("restore", point.json()["point"], "--vault", vault, "--target", target),
    ):
        result = run_cli(*args, password="not the password")
        assert result.code == 4, f"{args[0]}: exit {result.code}: {result.stderr}"
        assert "wrong password" in one_line(result)
    assert not target.exists() or not any(target.iterdir())


def test_restore_onto_non_empty_target_is_refused_unless_overwrite(
    vault: Path, tmp_path: Path
) -> None:
    rng = random.Random(5)
    source = tmp_path / "data"
    random_file(source / "a.bin", rng, 70_000)
    text_file(source / "sub" / "b.log", rng, 50_000)
    random_file(source / "c.bin", rng, 3000)
    want = digests(source)
    point = ok("backup", "files", source, "--vault", vault, "--resource", "r", "--json")
    point_id = point.json()["point"]

    target = tmp_path / "restore"
    in_target = restored_at(target, source)
    # Things in the way: a longer file, a folder where a file goes, a file where a folder goes.
    random_file(in_target / "a.bin", rng, 200_000)
    random_file(in_target / "c.bin" / "inner", rng, 10)
    in_target.joinpath("sub").write_bytes(b"not a folder")
    before = digests(target)

    refused = run_cli("restore", point_id, "--vault", vault, "--target", target)
    assert refused.code == 2, refused.stderr
    assert "not empty" in one_line(refused)
    assert digests(target) == before

    ok("restore", point_id, "--vault", vault, "--target", target, "--overwrite")
    assert digests(in_target) == want
