"""Copies between vaults: another region, other keys, resumable.

Apart from the two-region test, each test copies between two vaults on one
backend and runs on a folder and on S3.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import FAST_KDF, PASSWORD, ok, run_cli
from seaweed import Seaweed, start_seaweed
from stores import VaultStore
from support import digests, one_line, random_file, restored_at, start_cli, text_file

from reprieve.vault.keys import Secret
from reprieve.vault.packs import read_header
from reprieve.vault.repository import Vault, backend_for

OTHER_PASSWORD = "a different passphrase for the other region"
MiB = 1024 * 1024


@pytest.fixture
def west(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """A second, independent S3 service: the DR region."""
    server = start_seaweed(tmp_path_factory.mktemp("west"))
    yield server
    server.stop()


def _bucket(server: Seaweed, name: str) -> str:
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=name)
    return f"s3://{name}/prod?endpoint={server.endpoint}"


def test_copy_to_another_region_restores_with_the_first_region_down(
    s3_env: dict[str, str], seaweed: Seaweed, west: Seaweed, tmp_path: Path
) -> None:
    east_vault = _bucket(seaweed, "copy-east")
    west_vault = _bucket(west, "copy-west")
    to_env = {"REPRIEVE_TO_PASSWORD": OTHER_PASSWORD}
    ok("vault", "init", "--vault", east_vault, "--region", "us-east-1", *FAST_KDF)
    ok("vault", "init", "--vault", west_vault, "--region", "us-west-2", *FAST_KDF,
       password=OTHER_PASSWORD)  # fmt: skip

    rng = random.Random(11)
    source = tmp_path / "data"
    random_file(source / "a.bin", rng, 4 * MiB)
    text_file(source / "b.log", rng, 2 * MiB)
    first = ok("backup", "files", source, "--vault", east_vault, "--resource", "app", "--json")
    random_file(source / "c.bin", rng, MiB)
    second = ok("backup", "files", source, "--vault", east_vault, "--resource", "app", "--json")
    want = digests(source)

    done = ok("copy", "--from", east_vault, "--to", west_vault, "--json", env=to_env).json()
    assert done["points_copied"] == 2
    assert done["replication_lag_s"] == 0
    assert [c["source"] for c in done["copied"]] == [
        first.json()["point"],
        second.json()["point"],
    ]
    # The second point shares a.bin and b.log with the first: sent once.
    assert done["bytes_transferred"] < 8 * MiB
    again = ok("copy", "--from", east_vault, "--to", west_vault, "--json", env=to_env).json()
    assert again["points_copied"] == 0
    assert again["points_already_present"] == 2
    assert again["bytes_transferred"] == 0

    seaweed_down = Seaweed(seaweed.endpoint, seaweed.process, seaweed.folder)
    seaweed_down.process.send_signal(signal.SIGSTOP)  # region east is unreachable
    try:
        target = tmp_path / "restore"
        copied = done["copied"][-1]["destination"]
        ok("restore", copied, "--vault", west_vault, "--target", target, password=OTHER_PASSWORD)
        assert digests(restored_at(target, source)) == want
        ok("check", "--vault", west_vault, "--read-data", password=OTHER_PASSWORD)
    finally:
        seaweed_down.process.send_signal(signal.SIGCONT)


def test_copy_killed_midway_resumes_without_sending_again_what_arrived(
    vault_base: str, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    rng = random.Random(12)
    for i in range(6):
        random_file(source / f"r{i}.bin", rng, 24 * MiB)
    east, west = _two_vaults(vault_base)
    ok("backup", "files", source, "--vault", east, "--resource", "app")
    total = sum(VaultStore.at(east).sizes("packs/").values())
    arriving = VaultStore.at(west)

    def arrived() -> dict[str, int]:
        # A folder's `.tmp-*` file is a pack still being written: not yet stored.
        return {
            name: size
            for name, size in arriving.sizes("packs/").items()
            if not name.rsplit("/", 1)[-1].startswith(".tmp-")
        }

    started = time.monotonic()
    copier = start_cli("copy", "--from", east, "--to", west)
    while copier.poll() is None and time.monotonic() - started < 60:
        if len(arrived()) >= 4:  # of about nine
            break
        time.sleep(0.02)
    copier.send_signal(signal.SIGKILL)
    copier.wait()
    # An upload whose body was all sent before the kill may still land.
    before: dict[str, int] = {}
    settled = arrived()
    while settled != before:
        before = settled
        time.sleep(0.5)
        settled = arrived()
    assert 0 < sum(before.values()) < total, "the kill should land midway; the copy was too fast"
    assert not arriving.names("index/"), "no index is written before the data is all stored"

    resumed = ok("copy", "--from", east, "--to", west, "--json").json()
    assert resumed["points_copied"] == 1
    assert resumed["packs_resumed"] == len(before)
    # Every pack that arrived is kept, and no blob is stored twice: the rerun
    # sent only what had not arrived.
    after = arrived()
    assert before.items() <= after.items()
    vault = Vault.open(backend_for(west), Secret.passphrase(PASSWORD))
    blob_ids = [
        entry.id
        for name, size in after.items()
        for entry in read_header(vault.backend, vault.cipher, name.rsplit("/", 1)[-1], size)
    ]
    assert len(blob_ids) == len(set(blob_ids))
    sent = sum(after.values()) - sum(before.values())
    assert sent <= resumed["bytes_transferred"] < total - sum(before.values()) + MiB
    ok("check", "--vault", west, "--read-data")
    target = tmp_path / "restore"
    ok("restore", resumed["copied"][0]["destination"], "--vault", west, "--target", target)
    assert digests(restored_at(target, source)) == digests(source)


def _two_vaults(vault_base: str) -> tuple[str, str]:
    east, west = f"{vault_base}/east", f"{vault_base}/west"
    ok("vault", "init", "--vault", east, *FAST_KDF)
    ok("vault", "init", "--vault", west, *FAST_KDF)
    return east, west


def _points(vault: str) -> list[dict[str, str]]:
    listed: list[dict[str, str]] = ok("points", "list", "--vault", vault, "--json").json()
    return listed


def test_damaged_source_point_is_reported_and_the_others_are_copied(
    vault_base: str, tmp_path: Path
) -> None:
    east, west = _two_vaults(vault_base)
    rng = random.Random(21)
    source = tmp_path / "data"

    def backup(i: int) -> str:
        random_file(source / f"f{i}.bin", rng, MiB)
        done = ok("backup", "files", source, "--vault", east, "--resource", "app", "--json")
        return str(done.json()["point"])

    store = VaultStore.at(east)
    points = [backup(0)]
    # The first backup wrote two packs: f0.bin's data, which every point needs,
    # and its folder listings (the smaller), which only the oldest point needs.
    first = store.sizes("packs/")
    assert len(first) == 2, first
    points += [backup(1), backup(2)]
    store.delete(min(first, key=first.__getitem__))

    result = run_cli("copy", "--from", east, "--to", west, "--json")
    assert result.code == 3
    assert "could not be copied" in one_line(result)
    doc = result.json()
    assert [d["source"] for d in doc["damaged"]] == points[:1]
    copied = {c["source"] for c in doc["copied"]}
    assert copied and points[0] not in copied
    ok("check", "--vault", west, "--read-data")


def test_copy_keeps_parent_links_across_runs_and_refuses_a_vault_into_itself(
    vault_base: str, tmp_path: Path
) -> None:
    east, west = _two_vaults(vault_base)
    source = tmp_path / "data"
    random_file(source / "a.bin", random.Random(22), MiB)
    ok("backup", "files", source, "--vault", east, "--resource", "app")
    ok("copy", "--from", east, "--to", west)
    random_file(source / "b.bin", random.Random(23), MiB)
    ok("backup", "files", source, "--vault", east, "--resource", "app")
    second = ok("copy", "--from", east, "--to", west, "--json").json()["copied"][0]["destination"]
    shown = ok("points", "show", second, "--vault", west, "--json").json()
    first_copy = next(p["id"] for p in _points(west) if p["id"] != second)
    assert shown["parent"] == first_copy
    assert shown["origin"].endswith("/" + second_source(east))

    itself = run_cli("copy", "--from", east, "--to", east)
    assert itself.code == 2
    assert "same vault" in one_line(itself)


def second_source(vault: str) -> str:
    return _points(vault)[-1]["id"]


def test_copy_sends_again_what_vanished_from_the_target(vault_base: str, tmp_path: Path) -> None:
    east, west = _two_vaults(vault_base)
    source = tmp_path / "data"
    random_file(source / "a.bin", random.Random(24), 2 * MiB)
    ok("backup", "files", source, "--vault", east, "--resource", "app")
    ok("copy", "--from", east, "--to", west)
    target_store = VaultStore.at(west)
    for pack in target_store.names("packs/"):
        target_store.delete(pack)
    # The target lost its data; a new point that needs the same blobs must carry them.
    random_file(source / "b.bin", random.Random(25), MiB)
    ok("backup", "files", source, "--vault", east, "--resource", "app")
    refused = run_cli("copy", "--from", east, "--to", west)
    assert refused.code == 3
    assert "rebuild-index" in one_line(refused)
    ok("vault", "rebuild-index", "--vault", west)
    done = ok("copy", "--from", east, "--to", west, "--json").json()
    assert done["bytes_transferred"] >= 3 * MiB
    target = tmp_path / "restore"
    ok("restore", done["copied"][0]["destination"], "--vault", west, "--target", target)
    assert digests(restored_at(target, source)) == digests(source)


def test_a_target_made_with_ids_from_its_source_gets_stored_bytes_and_dedupes_backups(
    vault_base: str, tmp_path: Path
) -> None:
    east, west = f"{vault_base}/east", f"{vault_base}/west"
    east_id = ok("vault", "init", "--vault", east, *FAST_KDF, "--json").json()["id"]
    wrong = run_cli("vault", "init", "--vault", west, "--ids-from", east, *FAST_KDF,
                    env={"REPRIEVE_FROM_PASSWORD": "not the source's"})  # fmt: skip
    assert wrong.code == 4, wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    made = ok("vault", "init", "--vault", west, "--ids-from", east, *FAST_KDF, "--json",
              password=OTHER_PASSWORD, env={"REPRIEVE_FROM_PASSWORD": PASSWORD})  # fmt: skip
    assert made.json()["ids_from"] == east_id
    shown = ok("vault", "show", "--vault", west, "--json", password=OTHER_PASSWORD).json()
    assert shown["ids_from"] == east_id

    rng = random.Random(26)
    source = tmp_path / "data"
    random_file(source / "a.bin", rng, 3 * MiB)
    text_file(source / "b.log", rng, 2 * MiB)
    ok("backup", "files", source, "--vault", east, "--resource", "app")
    to_env = {"REPRIEVE_TO_PASSWORD": OTHER_PASSWORD}
    done = ok("copy", "--from", east, "--to", west, "--json", env=to_env).json()
    assert done["points_copied"] == 1
    copied = done["copied"][0]["destination"]

    # The packs hold the same compressed bytes, sealed under another data key.
    east_packs = VaultStore.at(east).sizes("packs/")
    west_packs = VaultStore.at(west).sizes("packs/")
    assert not set(east_packs) & set(west_packs)
    assert abs(sum(west_packs.values()) - sum(east_packs.values())) < 64 * 1024
    assert sum(east_packs.values()) < 4 * MiB  # the text was stored compressed, and so copied

    target = tmp_path / "restore"
    ok("restore", copied, "--vault", west, "--target", target, password=OTHER_PASSWORD)
    assert digests(restored_at(target, source)) == digests(source)
    ok("check", "--vault", west, "--read-data", password=OTHER_PASSWORD)

    # The same ids on both sides: a backup straight into the target finds every
    # file's data the copy brought (only the folder listings above it changed).
    direct = ok("backup", "files", source, "--vault", west, "--resource", "app", "--json",
                password=OTHER_PASSWORD)  # fmt: skip
    assert direct.json()["bytes_added"] < 64 * 1024
    random_file(source / "c.bin", rng, MiB)
    ok("backup", "files", source, "--vault", east, "--resource", "app")
    again = ok("copy", "--from", east, "--to", west, "--json", env=to_env).json()
    assert again["points_copied"] == 1
    assert MiB <= again["bytes_transferred"] < MiB + 64 * 1024  # only c.bin and listings
