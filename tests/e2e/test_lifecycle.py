"""Lifecycle on real SeaweedFS: aging points move to a cold vault on another
storage class, old ones are forgotten, and holds and retention are honoured."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import FAST_KDF, ok, run_cli
from support import digests, one_line, random_file, restored_at


def backup(vault: str, data: Path) -> dict[str, Any]:
    doc: dict[str, Any] = ok(
        "backup", "files", data, "--vault", vault, "--resource", "app", "--json"
    ).json()
    return doc


def ids(vault: str) -> list[str]:
    return [p["id"] for p in ok("points", "list", "--vault", vault, "--json").json()]


@pytest.mark.slow
def test_lifecycle_moves_then_expires_exactly_the_expected_points(
    s3_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=f"{s3_bucket}-cold")
    hot, cold = f"s3://{s3_bucket}/hot", f"s3://{s3_bucket}-cold/prod"
    ok("vault", "init", "--vault", hot, *FAST_KDF)
    ok("vault", "init", "--vault", cold, "--storage-class", "GLACIER_IR", *FAST_KDF)

    rng = random.Random(3)
    data = tmp_path / "data"
    random_file(data / "a.bin", rng, 700_000)
    old_at = time.monotonic()  # just before the point's own time
    old = backup(hot, data)
    old_digests = digests(data)
    time.sleep(5)
    random_file(data / "a.bin", rng, 700_000)
    new_at = time.monotonic()
    new = backup(hot, data)

    def rules() -> list[str | Path]:
        """--cold-after halfway between the two points' ages now: on a loaded
        machine a fixed age let the new point grow old enough to move too."""
        now = time.monotonic()
        between = round(((now - old_at) + (now - new_at)) / 2)
        return ["--cold-vault", cold, "--cold-after", f"{between}s", "--delete-after", "1h"]

    plan = ok("lifecycle", "run", "--vault", hot, *rules(), "--dry-run", "--json").json()
    assert [m["point"] for m in plan["move"]] == [old["point"]]
    assert plan["delete"] == [] and plan["kept"] == []
    assert ids(hot) == [old["point"], new["point"]] and ids(cold) == []

    done = ok("lifecycle", "run", "--vault", hot, *rules(), "--json").json()
    (moved,) = done["move"]
    assert moved["point"] == old["point"]
    assert ids(hot) == [new["point"]]
    assert ids(cold) == [moved["cold_point"]]
    assert done["prune"]["hot"]["packs_deleted"] >= 1

    target = tmp_path / "restore"
    ok("restore", moved["cold_point"], "--vault", cold, "--target", target)
    assert digests(restored_at(target, data)) == old_digests
    shown = ok("vault", "show", "--vault", cold, "--json").json()
    assert shown["storage_class"] == "GLACIER_IR"
    assert shown["bytes_by_storage_class"]["GLACIER_IR"] == shown["sizes"]["packs"]

    # Nothing in the hot vault is a minute old yet.
    later = ["--cold-vault", cold, "--cold-after", "1m", "--delete-after", "1h"]
    again = ok("lifecycle", "run", "--vault", hot, *later, "--json").json()
    assert again["move"] == [] and again["delete"] == []

    # Expiry: everything is older than 3 s now, but a legal hold keeps its point.
    ok("points", "hold", new["point"], "--vault", hot, "--reason", "case 9")
    made = datetime.fromisoformat(new["time"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (made - datetime.now(UTC)).total_seconds() + 4.5))
    expire = ["--delete-after", "3s", "--cold-vault", cold]
    plan = ok("lifecycle", "run", "--vault", hot, *expire, "--dry-run", "--json").json()
    assert [(d["vault"], d["point"]) for d in plan["delete"]] == [("cold", moved["cold_point"])]
    assert [(k["vault"], k["point"]) for k in plan["kept"]] == [("hot", new["point"])]
    assert "legal hold: case 9" in plan["kept"][0]["reason"]
    ok("lifecycle", "run", "--vault", hot, *expire)
    assert ids(cold) == []
    assert ids(hot) == [new["point"]]
    ok("check", "--read-data", "--vault", hot)
    ok("check", "--read-data", "--vault", cold)

    wrong = run_cli("lifecycle", "run", "--vault", hot, "--cold-after", "1d")
    assert wrong.code == 2
    assert "--cold-vault" in one_line(wrong)
