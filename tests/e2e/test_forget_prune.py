"""Retention and space reclamation through the real command line."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import ok, run_cli
from support import digests, one_line, random_file, restored_at, text_file

MiB = 1024 * 1024


def _vault_files(vault: Path) -> dict[str, int]:
    return {
        str(p.relative_to(vault)): p.stat().st_size
        for p in sorted(vault.rglob("*"))
        if p.is_file() and "locks" not in p.parts
    }


def _four_points(vault: Path, source: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Four points of a tree where each round replaces one large file."""
    rng = random.Random(7)
    text_file(source / "log.txt", rng, MiB)
    points: list[str] = []
    contents: dict[str, dict[str, str]] = {}
    for round_ in range(4):
        random_file(source / "churn.bin", rng, 3 * MiB)
        random_file(source / f"kept-{round_}.bin", rng, 256 * 1024)
        done = ok("backup", "files", source, "--vault", vault, "--resource", "app", "--json")
        points.append(done.json()["point"])
        contents[points[-1]] = digests(source)
    return points, contents


def test_forget_dry_run_changes_nothing_and_forget_removes_exactly_the_plan(
    vault: Path, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    points, _ = _four_points(vault, source)
    other = ok("backup", "files", source, "--vault", vault, "--resource", "other", "--json")
    before = _vault_files(vault)

    plan = ok(
        "forget", "--vault", vault, "--resource", "app", "--keep-last", "2", "--dry-run", "--json"
    ).json()
    assert plan["dry_run"] is True
    (app,) = plan["resources"]
    assert app["remove"] == [points[1], points[0]]
    assert [k["id"] for k in app["keep"]] == [points[3], points[2]]
    assert all(k["reasons"] == ["last"] for k in app["keep"])
    assert _vault_files(vault) == before

    done = ok("forget", "--vault", vault, "--resource", "app", "--keep-last", "2", "--json")
    assert done.json()["resources"][0]["remove"] == app["remove"]
    listed = {p["id"] for p in ok("points", "list", "--vault", vault, "--json").json()}
    assert listed == {points[2], points[3], other.json()["point"]}


def test_forget_without_a_rule_refuses_with_one_line(vault: Path) -> None:
    result = run_cli("forget", "--vault", vault, "--resource", "app")
    assert result.code == 2
    assert "--keep" in one_line(result)


def test_prune_frees_forgotten_data_and_keeps_every_remaining_point_restorable(
    vault: Path, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    points, contents = _four_points(vault, source)
    ok("forget", "--vault", vault, "--keep-last", "1")
    before = _vault_files(vault)

    dry = ok("prune", "--vault", vault, "--dry-run", "--json").json()
    # Three forgotten 3 MiB files of random data are unreferenced now.
    assert dry["bytes_freed"] >= 3 * 3 * MiB
    # Their packs also hold the small files the newest point still needs: repacked.
    assert dry["packs_repacked"] == 3
    assert _vault_files(vault) == before

    done = ok("prune", "--vault", vault, "--json").json()
    after = _vault_files(vault)
    packs = sum(size for name, size in after.items() if name.startswith("packs/"))
    packs_before = sum(size for name, size in before.items() if name.startswith("packs/"))
    assert done["bytes_freed"] == packs_before - packs
    # The plan's estimate differs only by the headers of repacked packs.
    assert abs(done["bytes_freed"] - dry["bytes_freed"]) < 4096
    assert len([n for n in after if n.startswith("index/")]) == 1

    ok("check", "--vault", vault, "--read-data")
    target = tmp_path / "restore"
    ok("restore", points[-1], "--vault", vault, "--target", target)
    assert digests(restored_at(target, source)) == contents[points[-1]]

    again = ok("prune", "--vault", vault, "--json").json()
    assert again["bytes_freed"] == 0
    assert again["packs_repacked"] == again["packs_deleted"] == 0
