"""The ransomware scenario on real S3 Object Lock (SeaweedFS): the drill restores
only from a point storage keeps locked, and proves it unchanged since written."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import boto3
import pytest
from conftest import FAST_KDF, ok, run_cli


@pytest.fixture
def locked_bucket(s3_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    name = "d-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_ransomware_drill_restores_a_locked_unchanged_point(
    locked_bucket: str, s3_bucket: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_bytes(random.Random(3).randbytes(400_000))
    vault = f"s3://{locked_bucket}/prod"
    ok("vault", "init", "--vault", vault, "--lock", "governance", "--min-retention", "1m",
       "--max-retention", "1h", *FAST_KDF)  # fmt: skip
    point = ok(
        "backup", "files", data, "--vault", vault, "--resource", "ledger", "--retain", "10m",
        "--json",
    ).json()["point"]  # fmt: skip

    result = run_cli(
        "drill", "run", "--resource", "ledger", "--vault", vault, "--tier", "premium",
        "--scenario", "ransomware", "--json",
    )  # fmt: skip

    assert result.code == 0, result.stdout
    doc = result.json()
    assert doc["passed"] is True and doc["recovered"][0]["point"] == point
    assert doc["recovered"][0]["locked_until"] is not None
    proof = next(c for c in doc["checks"] if c["name"] == "point locked and unchanged")
    assert proof["passed"]
    assert proof["evidence"]["enforced_by"] == "storage"
    assert proof["evidence"]["first_version"] == "identical"
    assert proof["evidence"]["name_is_hash_of_bytes"] is True
    digests = next(c for c in doc["checks"] if c["name"] == "content digests")
    assert digests["passed"] and digests["evidence"]["bytes"] == 400_000

    # A vault without a lock cannot stand in for one.
    plain = f"s3://{s3_bucket}/plain"
    ok("vault", "init", "--vault", plain, *FAST_KDF)
    ok("backup", "files", data, "--vault", plain, "--resource", "ledger")
    refused = run_cli(
        "drill", "run", "--resource", "ledger", "--vault", plain, "--tier", "premium",
        "--scenario", "ransomware",
    )  # fmt: skip
    assert refused.code == 8
    assert "is locked" in refused.stderr
