"""Retention and space reclamation through the real command line, on a folder and on S3."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import ok, run_cli
from stores import VaultStore
from support import digests, one_line, random_file, restored_at, text_file

MiB = 1024 * 1024


def _vault_files(vault: str) -> dict[str, int]:
    stored = VaultStore.at(vault).sizes()
    return {name: size for name, size in stored.items() if not name.startswith("locks/")}


def _four_points(vault: str, source: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
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
    vault: str, tmp_path: Path
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


def test_forget_without_a_rule_refuses_with_one_line(vault: str) -> None:
    result = run_cli("forget", "--vault", vault, "--resource", "app")
    assert result.code == 2
    assert "--keep" in one_line(result)


def test_prune_frees_forgotten_data_and_keeps_every_remaining_point_restorable(
    vault: str, tmp_path: Path
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


def test_forget_dry_run_with_prune_reports_what_the_real_run_frees(
    vault: str, tmp_path: Path
) -> None:
    _four_points(vault, tmp_path / "data")
    before = _vault_files(vault)
    rule = ("forget", "--vault", vault, "--keep-last", "1", "--prune", "--json")

    dry = ok(*rule, "--dry-run").json()
    assert _vault_files(vault) == before
    # Planned as if the three older points were gone: their 3 MiB files are free.
    assert dry["prune"]["dry_run"] is True
    assert dry["prune"]["bytes_freed"] >= 3 * 3 * MiB

    done = ok(*rule).json()
    assert done["resources"][0]["remove"] == dry["resources"][0]["remove"]
    assert done["prune"]["packs_repacked"] == dry["prune"]["packs_repacked"]
    # The estimate differs only by the headers of repacked packs.
    assert abs(done["prune"]["bytes_freed"] - dry["prune"]["bytes_freed"]) < 4096


def test_half_empty_pack_is_repacked_after_an_earlier_prune(vault: str, tmp_path: Path) -> None:
    rng = random.Random(50)
    source = tmp_path / "data"
    size = 300 * 1024  # below the smallest chunk: one blob per file
    for i in range(40):
        random_file(source / f"f{i:02}.bin", rng, size)

    def backup() -> str:
        done = ok("backup", "files", source, "--vault", vault, "--resource", "app", "--json")
        return str(done.json()["point"])

    backup()
    store = VaultStore.at(vault)
    (shared,) = [name for name, bytes_ in store.sizes("packs/").items() if bytes_ > 40 * size]
    # Each later point keeps fewer of the files: 25 of 40, then 10 of 40.
    for i in range(15):
        (source / f"f{i:02}.bin").unlink()
    backup()
    for i in range(15, 30):
        (source / f"f{i:02}.bin").unlink()
    last = backup()
    want = digests(source)

    first = ok("forget", "--vault", vault, "--keep-last", "2", "--prune", "--json").json()
    assert first["prune"]["packs_repacked"] + first["prune"]["packs_deleted"] >= 1
    assert store.exists(shared), "a pack still 62% live was repacked"

    # The earlier prune rewrote the index without the dead blobs; the pack's size on
    # disk, not the index's shorter list, must decide that it is now 25% live.
    second = ok("forget", "--vault", vault, "--keep-last", "1", "--prune", "--json").json()
    assert second["prune"]["packs_repacked"] >= 1
    assert second["prune"]["bytes_freed"] >= 25 * size
    assert not store.exists(shared)

    ok("check", "--vault", vault, "--read-data")
    target = tmp_path / "restore"
    ok("restore", last, "--vault", vault, "--target", target)
    assert digests(restored_at(target, source)) == want


def test_forget_of_an_unknown_resource_exits_5(vault: str, tmp_path: Path) -> None:
    source = tmp_path / "data"
    random_file(source / "a.bin", random.Random(5), 5000)
    ok("backup", "files", source, "--vault", vault, "--resource", "app")

    result = run_cli("forget", "--vault", vault, "--resource", "nope", "--keep-last", "1")
    assert result.code == 5, result.stderr
    assert "nope" in one_line(result)
    assert len(ok("points", "list", "--vault", vault, "--json").json()) == 1
    assert not VaultStore.at(vault).names("locks/"), "the refused forget left its lock"
