"""S3 through a faulty network: 500s, dropped connections, slow answers."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import FAST_KDF, ok, run_cli
from faultproxy import FaultProxy
from seaweed import Seaweed
from support import digests, one_line, random_file, restored_at, text_file

MiB = 1024 * 1024


@pytest.fixture
def proxy(seaweed: Seaweed) -> Iterator[FaultProxy]:
    port = urlsplit(seaweed.endpoint).port
    assert port is not None
    faulty = FaultProxy(port, rate=0.15, seed=5)
    yield faulty
    faulty.close()


@pytest.mark.slow
def test_backups_and_copies_through_faults_complete_or_fail_cleanly(
    s3_bucket: str, seaweed: Seaweed, proxy: FaultProxy, tmp_path: Path
) -> None:
    direct = f"s3://{s3_bucket}/prod?endpoint={seaweed.endpoint}"
    faulty = f"s3://{s3_bucket}/prod?endpoint={proxy.endpoint}"
    west = tmp_path / "west"
    ok("vault", "init", "--vault", direct, *FAST_KDF)
    ok("vault", "init", "--vault", west, *FAST_KDF)
    rng = random.Random(8)
    source = tmp_path / "data"
    saved: dict[str, dict[str, str]] = {}
    for round_ in range(5):
        random_file(source / f"r{round_}.bin", rng, 3 * MiB)
        text_file(source / f"t{round_}.log", rng, MiB)
        result = run_cli(
            "backup", "files", source, "--vault", faulty, "--resource", "app", "--json"
        )
        assert "Traceback" not in result.stderr
        if result.code == 0:
            saved[result.json()["point"]] = digests(source)
        else:
            one_line(result)

    # Every fault kind was met, and retries carried most backups through.
    assert all(proxy.faults[kind] > 0 for kind in proxy.kinds), proxy.faults
    assert saved, f"no backup survived the faults: {proxy.faults}"

    # No partial point: exactly the backups that said so are there, all intact.
    listed = {p["id"] for p in ok("points", "list", "--vault", direct, "--json").json()}
    assert listed == set(saved)
    ok("check", "--vault", direct, "--read-data")
    for point, want in saved.items():
        target = tmp_path / f"restore-{point[:12]}"
        ok("restore", point, "--vault", direct, "--target", target)
        assert digests(restored_at(target, source)) == want

    # Retries exhausted while writing the index, after the packs went up: the
    # backup fails with one line and leaves no point and nothing check objects to.
    proxy.rate, proxy.only, proxy.kinds = 1.0, b"/index/", ("error", "drop")
    random_file(source / "late.bin", rng, 3 * MiB)
    failed = run_cli(
        "backup", "files", source, "--vault", faulty, "--resource", "app", "--json",
        env={"AWS_MAX_ATTEMPTS": "2"},
    )  # fmt: skip
    assert failed.code == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "index/" in one_line(failed)
    listed = {p["id"] for p in ok("points", "list", "--vault", direct, "--json").json()}
    assert listed == set(saved)
    ok("check", "--vault", direct, "--read-data")
    proxy.rate, proxy.only, proxy.kinds = 0.15, None, ("error", "drop", "slow")

    # A copy out of the faulty region: clean failure or a verified result; a
    # rerun finishes what is left.
    for _ in range(3):
        copied = run_cli("copy", "--from", faulty, "--to", west, "--json")
        assert "Traceback" not in copied.stderr
        if copied.code == 0:
            break
    else:
        pytest.fail(f"copy never got through: {copied.stderr}")
    ok("check", "--vault", west, "--read-data")
    assert len(ok("points", "list", "--vault", west, "--json").json()) == len(saved)


def test_a_body_damaged_on_the_way_is_refused_and_sent_again(
    s3_bucket: str, seaweed: Seaweed, proxy: FaultProxy, tmp_path: Path
) -> None:
    direct = f"s3://{s3_bucket}/prod?endpoint={seaweed.endpoint}"
    faulty = f"s3://{s3_bucket}/prod?endpoint={proxy.endpoint}"
    ok("vault", "init", "--vault", direct, *FAST_KDF)
    rng = random.Random(9)
    source = tmp_path / "data"
    for i in range(3):
        random_file(source / f"r{i}.bin", rng, 3 * MiB)
        text_file(source / f"t{i}.log", rng, MiB)
    # Every third upload arrives with a byte inverted.
    proxy.rate, proxy.only, proxy.kinds = 0.33, b"PUT ", ("flip",)

    point = ok("backup", "files", source, "--vault", faulty, "--resource", "app", "--json")

    assert proxy.faults["flip"] > 0, proxy.faults
    ok("check", "--vault", direct, "--read-data")
    target = tmp_path / "restored"
    ok("restore", point.json()["point"], "--vault", direct, "--target", target)
    assert digests(restored_at(target, source)) == digests(source)
