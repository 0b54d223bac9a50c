"""Ransomware: an attacker holding the vault's own S3 credentials deletes and
overwrites every object version it can, through the S3 API. Every locked
point stays restorable, byte for byte, and `check --read-data` passes."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import FAST_KDF, ok
from support import digests, random_file, restored_at, text_file


def attack(client: Any, bucket: str) -> tuple[int, int]:
    """Delete every version, then overwrite and hide every name; (deleted, refused)."""
    deleted = refused = 0
    listing = client.list_object_versions(Bucket=bucket)
    entries = listing.get("Versions", []) + listing.get("DeleteMarkers", [])
    for entry in entries:
        for bypass in (False, True):
            try:
                extra = {"BypassGovernanceRetention": True} if bypass else {}
                client.delete_object(
                    Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"], **extra
                )
                deleted += 1
                break
            except ClientError:
                refused += bypass
    for key in {e["Key"] for e in entries}:
        client.put_object(Bucket=bucket, Key=key, Body=b"encrypted by ransomware; pay up")
        client.delete_object(Bucket=bucket, Key=key)
    return deleted, refused


@pytest.fixture
def locked_bucket(s3_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    name = "r-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_locked_points_survive_an_attacker_with_the_vaults_credentials(
    locked_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    vault = f"s3://{locked_bucket}/prod"
    ok(
        "vault",
        "init",
        "--vault",
        vault,
        "--lock",
        "compliance",
        "--min-retention",
        "1h",
        *FAST_KDF,
    )
    rng = random.Random(11)
    data = tmp_path / "data"
    for i in range(4):
        random_file(data / f"bin{i}", rng, rng.randint(200_000, 900_000))
        text_file(data / "logs" / f"app{i}.log", rng, 300_000)
    first = ok("backup", "files", data, "--vault", vault, "--resource", "app", "--json").json()
    before_first = digests(data)
    random_file(data / "bin0", rng, 500_000)
    (data / "logs" / "app1.log").unlink()
    second = ok("backup", "files", data, "--vault", vault, "--resource", "app", "--json").json()
    before_second = digests(data)

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    _, refused = attack(client, locked_bucket)
    assert refused > 0
    # Every name now answers with a delete marker: to a plain S3 reader the vault is gone.
    assert "Contents" not in client.list_objects_v2(Bucket=locked_bucket)
    # A plausible config on top, as a careful attacker would leave.
    config = json.loads(
        client.get_object(
            Bucket=locked_bucket,
            Key="prod/config",
            VersionId=(
                client.list_object_versions(Bucket=locked_bucket, Prefix="prod/config")["Versions"][
                    -1
                ]["VersionId"]
            ),
        )["Body"].read()
    )
    client.put_object(
        Bucket=locked_bucket, Key="prod/config", Body=json.dumps({**config, "format": 2}).encode()
    )

    listed = ok("points", "list", "--vault", vault, "--json").json()
    assert {p["id"] for p in listed} == {first["point"], second["point"]}
    for point, expected in ((first, before_first), (second, before_second)):
        target = tmp_path / f"restore-{point['point'][:8]}"
        ok("restore", point["point"], "--vault", vault, "--target", target)
        assert digests(restored_at(target, data)) == expected
    ok("check", "--read-data", "--vault", vault)

    # Junk under a new index name: rebuild-index clears it, locked files stay.
    client.put_object(Bucket=locked_bucket, Key=f"prod/index/{'f' * 64}", Body=b"junk")
    ok("vault", "rebuild-index", "--vault", vault)
    ok("check", "--read-data", "--vault", vault)

    # The vault keeps working: a new point lands on top of the attacked bucket.
    (data / "after.txt").write_text("written after the attack\n")
    third = ok("backup", "files", data, "--vault", vault, "--resource", "app", "--json").json()
    target = tmp_path / "restore-third"
    ok("restore", third["point"], "--vault", vault, "--target", target)
    assert digests(restored_at(target, data)) == digests(data)
    ok("check", "--read-data", "--vault", vault)
