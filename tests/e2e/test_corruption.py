"""A damaged vault is found by `check` and never restored as if it were whole.

Every stored object is named by the hash of its bytes and every blob is
authenticated, so one flipped byte anywhere in a pack, an index file, or a
point must surface as damage (exit 3) that names the object, and a restore
must either fail with one clear line or produce exactly the original bytes.
Each test damages its vault through a VaultStore and runs on a folder and on S3.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FAST_KDF, ok, run_cli, shared_vault_base
from stores import VaultStore, copy_vault
from support import digests, one_line, random_file, restored_at, text_file


@dataclass(frozen=True)
class Backed:
    vault: str
    source: Path
    points: list[str]
    contents: dict[str, dict[str, str]]
    """Per point id, the digests of the source when that point was taken."""
    index_files: list[str]
    """In the order the backups wrote them."""


@pytest.fixture(scope="module")
def backed(
    storage: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Backed:
    """Two points of a small tree of random and compressible files."""
    root = tmp_path_factory.mktemp("corruption")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(root))  # as the autouse isolation does for each test
        return _back_up_twice(root, shared_vault_base(storage, request, env, root))


def _copy(backed: Backed, vault_base: str) -> tuple[str, VaultStore]:
    """A copy of the backed-up vault for one test to damage."""
    vault = f"{vault_base}/vault"
    copy_vault(backed.vault, vault)
    return vault, VaultStore.at(vault)


def _id(name: str) -> str:
    """How reports name a stored object: the start of its content hash."""
    return name.rsplit("/", 1)[-1][:12]


def _back_up_twice(root: Path, vault_base: str) -> Backed:
    rng = random.Random(20240501)
    source = root / "data"
    for i in range(3):
        random_file(source / "random" / f"r{i}.bin", rng, 700 * 1024 + rng.randrange(4096))
    for i in range(2):
        text_file(source / "logs" / f"app{i}.log", rng, 900 * 1024)
    for i in range(5):
        random_file(source / "small" / f"s{i}.dat", rng, rng.randrange(1, 9000))
    vault = f"{vault_base}/vault"
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    store = VaultStore.at(vault)

    points: list[str] = []
    contents: dict[str, dict[str, str]] = {}
    index_files: list[str] = []
    for round_ in range(2):
        if round_ == 1:
            random_file(source / "random" / "r1.bin", rng, 600 * 1024)
            with (source / "logs" / "app0.log").open("ab") as log:
                log.write(b"ERROR after the first point\n" * 2000)
            random_file(source / "small" / "new.dat", rng, 300 * 1024)
        done = ok("backup", "files", source, "--vault", vault, "--resource", "app", "--json")
        point = str(done.json()["point"])
        points.append(point)
        contents[point] = digests(source)
        index_files += sorted(set(store.names("index/")) - set(index_files))
    return Backed(vault, source, points, contents, index_files)


def _target_object(backed: Backed, which: str) -> str:
    """The object to damage in a copy of the backed-up vault."""
    # A pack holds blobs of one type, and this tree's folder listings are far
    # smaller than its file contents: the largest pack holds data, the smallest trees.
    sizes = VaultStore.at(backed.vault).sizes("packs/")
    packs = sorted(sizes, key=lambda name: (sizes[name], name))
    if which == "data pack":
        return packs[-1]
    if which == "tree pack":
        return packs[0]
    if which == "index":
        return backed.index_files[-1]
    return f"points/{backed.points[0]}"


def _offset(size: int, position: str, rng: random.Random) -> int:
    return {"start": 0, "middle": size // 2, "end": size - 1}.get(position, rng.randrange(size))


@pytest.mark.parametrize("position", ["start", "middle", "end", "random"])
@pytest.mark.parametrize("which", ["data pack", "tree pack", "index", "point"])
def test_flipped_byte_in_any_object_is_found_and_never_restored_silently(
    backed: Backed, vault_base: str, tmp_path: Path, which: str, position: str
) -> None:
    vault, store = _copy(backed, vault_base)
    damaged = _target_object(backed, which)
    offset = _offset(store.size(damaged), position, random.Random(f"{which}/{position}"))
    store.flip(damaged, offset)

    check = run_cli("check", "--vault", vault, "--read-data", "--json")
    assert check.code == 3, f"flip at {offset} of {damaged}: {check.stdout} {check.stderr}"
    one_line(check)
    report = check.json()
    assert report["ok"] is False
    assert any(_id(damaged) in error for error in report["errors"]), report["errors"]

    lost = set(report["damaged_points"])
    if which == "point":
        lost.add(backed.points[0])
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


def test_wrong_password_is_refused_with_one_line(vault: str, tmp_path: Path) -> None:
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
    vault: str, tmp_path: Path
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


def test_restore_stopped_by_a_damaged_folder_leaves_no_half_written_file(
    vault: str, tmp_path: Path
) -> None:
    rng = random.Random(9)
    source = tmp_path / "data"
    random_file(source / "a" / "big.bin", rng, 3 * 1024 * 1024)
    ok("backup", "files", source, "--vault", vault, "--resource", "r")
    store = VaultStore.at(vault)
    first_packs = set(store.names("packs/"))
    # Empty files have no content, so the second backup stores only folder listings,
    # and the listing of b/, long names that do not compress, fills nearly all that pack.
    (source / "b").mkdir()
    for _ in range(2000):
        (source / "b" / rng.randbytes(24).hex()).touch()
    point = ok("backup", "files", source, "--vault", vault, "--resource", "r", "--json")
    (listings,) = set(store.names("packs/")) - first_packs
    contents = max(first_packs, key=store.size)
    # Damage one blob in the middle of big.bin and the listing of b/, which restore
    # reads after it has started writing big.bin.
    store.flip(contents, store.size(contents) // 2)
    store.flip(listings, store.size(listings) // 2)
    check = run_cli("check", "--vault", vault, "--read-data", "--json")
    damaged = check.json()["damaged_points"][point.json()["point"]]
    assert any(p.endswith("/data/a/big.bin") for p in damaged), damaged
    assert any("/data/b/" in p and "folder listing" in p for p in damaged), damaged

    target = tmp_path / "restore"
    result = run_cli("restore", point.json()["point"], "--vault", vault, "--target", target)
    assert result.code == 3, result.stderr
    one_line(result)
    assert not restored_at(target, source).joinpath("a", "big.bin").exists()


def test_damaged_index_is_rebuilt_from_pack_headers_and_nothing_is_lost(
    backed: Backed, vault_base: str, tmp_path: Path
) -> None:
    vault, store = _copy(backed, vault_base)
    for index_file in backed.index_files:
        store.flip(index_file, 7)

    assert run_cli("check", "--vault", vault).code == 3
    refused = run_cli("prune", "--vault", vault)
    assert refused.code == 3
    assert "rebuild-index" in one_line(refused)
    packs_before = store.names("packs/")

    rebuilt = ok("vault", "rebuild-index", "--vault", vault, "--json").json()
    assert rebuilt["packs"] == len(packs_before)
    assert rebuilt["unreadable_packs"] == 0
    assert len(store.names("index/")) == 1
    ok("check", "--vault", vault, "--read-data")
    for point in backed.points:
        target = tmp_path / f"restore-{point[:12]}"
        ok("restore", point, "--vault", vault, "--target", target)
        assert digests(restored_at(target, backed.source)) == backed.contents[point]


def test_restore_with_a_missing_pack_exits_3_and_leaves_no_empty_file(
    vault: str, tmp_path: Path
) -> None:
    rng = random.Random(11)
    source = tmp_path / "data"
    text_file(source / "kept" / "app.log", rng, 400 * 1024)
    random_file(source / "kept" / "small.dat", rng, 3000)
    ok("backup", "files", source, "--vault", vault, "--resource", "r")
    store = VaultStore.at(vault)
    first_packs = set(store.names("packs/"))
    # Written by the pool (over 1 MiB) and in the walking thread (under), from one new pack.
    random_file(source / "lost" / "big.bin", rng, 3 * 1024 * 1024)
    random_file(source / "lost" / "medium.bin", rng, 200 * 1024)
    point = ok("backup", "files", source, "--vault", vault, "--resource", "r", "--json")
    want = digests(source)
    store.delete(max(set(store.names("packs/")) - first_packs, key=store.size))

    target = tmp_path / "restore"
    result = run_cli("restore", point.json()["point"], "--vault", vault, "--target", target)
    assert result.code == 3, result.stderr
    one_line(result)
    restored = restored_at(target, source)
    assert not (restored / "lost" / "big.bin").exists()
    assert not (restored / "lost" / "medium.bin").exists()
    got = digests(restored)
    assert {p: d for p, d in got.items() if p.startswith("kept")} == {
        p: d for p, d in want.items() if p.startswith("kept")
    }
    assert set(got) == set(want) - {"lost/big.bin", "lost/medium.bin"}


def test_damaged_point_does_not_block_backups_or_listing(vault: str, tmp_path: Path) -> None:
    rng = random.Random(12)
    app, etc = tmp_path / "app", tmp_path / "etc"
    random_file(app / "a.bin", rng, 20_000)
    text_file(etc / "conf.ini", rng, 5000)

    def backup(resource: str, source: Path) -> str:
        done = ok("backup", "files", source, "--vault", vault, "--resource", resource, "--json")
        return str(done.json()["point"])

    older = backup("app", app)
    # The newest point of a resource is the parent of its next backup.
    damaged = backup("app", app)
    other = backup("etc", etc)
    VaultStore.at(vault).flip(f"points/{damaged}", 40)

    listed = ok("points", "list", "--vault", vault, "--json").json()
    assert {p["id"] for p in listed} == {older, other}

    random_file(app / "b.bin", rng, 10_000)
    newer = backup("app", app)
    newer_etc = backup("etc", etc)
    listed = ok("points", "list", "--vault", vault, "--json").json()
    assert {p["id"] for p in listed} == {older, other, newer, newer_etc}
    target = tmp_path / "restore"
    ok("restore", newer, "--vault", vault, "--target", target)
    assert digests(restored_at(target, app)) == digests(app)

    check = run_cli("check", "--vault", vault, "--json")
    assert check.code == 3, check.stderr
    assert any(damaged[:12] in error for error in check.json()["errors"]), check.stdout


def _cut_in_half(store: VaultStore, name: str) -> None:
    store.write(name, store.read(name)[: store.size(name) // 2])


def test_damaged_key_file_does_not_lock_out_other_keys(vault: str, tmp_path: Path) -> None:
    store = VaultStore.at(vault)
    (first,) = store.names("keys/")
    ok("vault", "key", "add", "--vault", vault, *FAST_KDF, env={"REPRIEVE_NEW_PASSWORD": "second"})
    _cut_in_half(store, first)

    source = tmp_path / "data"
    random_file(source / "a.bin", random.Random(13), 5000)
    ok("backup", "files", source, "--vault", vault, "--resource", "r", password="second")
    assert len(ok("points", "list", "--vault", vault, "--json", password="second").json()) == 1

    refused = run_cli("points", "list", "--vault", vault)
    assert refused.code in (3, 4), refused.stderr
    one_line(refused)


def test_damaged_key_file_can_be_removed_with_another_key(vault: str) -> None:
    store = VaultStore.at(vault)
    (first,) = store.names("keys/")
    ok("vault", "key", "add", "--vault", vault, *FAST_KDF, env={"REPRIEVE_NEW_PASSWORD": "second"})
    _cut_in_half(store, first)

    removed = ok("vault", "key", "remove", _id(first), "--vault", vault, password="second")
    assert _id(first) in removed.stdout
    assert not store.exists(first)
    ok("check", "--vault", vault, password="second")


def test_prune_keeps_a_pack_whose_header_is_damaged(
    backed: Backed, vault_base: str, tmp_path: Path
) -> None:
    vault, store = _copy(backed, vault_base)
    pack = _target_object(backed, "data pack")
    # The header envelope ends just before the 8-byte trailer.
    store.flip(pack, store.size(pack) - 8 - 12)

    rebuilt = ok("vault", "rebuild-index", "--vault", vault, "--json").json()
    assert rebuilt["unreadable_packs"] == 1
    ok("prune", "--vault", vault)

    assert store.exists(pack), "prune deleted a pack whose blobs every point needs"
    for point in backed.points:
        target = tmp_path / f"restore-{point[:12]}"
        ok("restore", point, "--vault", vault, "--target", target)
        assert digests(restored_at(target, backed.source)) == backed.contents[point]
