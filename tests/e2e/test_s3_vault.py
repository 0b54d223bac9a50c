"""Vaults on real S3 (SeaweedFS): the same engine, the same guarantees."""

from __future__ import annotations

import random
from pathlib import Path

import boto3
from conftest import FAST_KDF, ok, run_cli
from support import digests, one_line, random_file, restored_at, text_file


def test_backup_restore_check_and_prune_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    vault = f"s3://{s3_bucket}/prod"
    rng = random.Random(3)
    source = tmp_path / "data"
    random_file(source / "a.bin", rng, 3 * 1024 * 1024)
    text_file(source / "logs" / "app.log", rng, 2 * 1024 * 1024)
    ok("vault", "init", "--vault", vault, "--region", "us-east-1", *FAST_KDF)
    first = ok("backup", "files", source, "--vault", vault, "--resource", "app", "--json").json()
    random_file(source / "a.bin", rng, 3 * 1024 * 1024)
    second = ok("backup", "files", source, "--vault", vault, "--resource", "app", "--json").json()
    assert second["files_read"] == 1

    target = tmp_path / "restore"
    ok("restore", second["point"], "--vault", vault, "--target", target)
    assert digests(restored_at(target, source)) == digests(source)
    ok("check", "--vault", vault, "--read-data")

    ok("forget", "--vault", vault, "--keep-last", "1")
    pruned = ok("prune", "--vault", vault, "--json").json()
    assert pruned["bytes_freed"] >= 3 * 1024 * 1024
    ok("check", "--vault", vault, "--read-data")
    listed = ok("points", "list", "--vault", vault, "--json").json()
    assert [p["id"] for p in listed] == [second["point"]]
    assert first["point"] != second["point"]


def test_tampered_object_on_s3_is_found_by_check(s3_bucket: str, tmp_path: Path) -> None:
    vault = f"s3://{s3_bucket}/prod"
    source = tmp_path / "data"
    random_file(source / "a.bin", random.Random(4), 2 * 1024 * 1024)
    ok("vault", "init", "--vault", vault, *FAST_KDF)
    ok("backup", "files", source, "--vault", vault, "--resource", "app")
    s3 = boto3.client("s3")
    packs = s3.list_objects_v2(Bucket=s3_bucket, Prefix="prod/packs/")["Contents"]
    key = max(packs, key=lambda o: o["Size"])["Key"]
    body = bytearray(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    body[len(body) // 3] ^= 0x01
    s3.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))

    result = run_cli("check", "--vault", vault, "--read-data")
    assert result.code == 3
    assert key.rsplit("/", 1)[-1][:12] in result.stdout + result.stderr


def test_wrong_credentials_and_missing_bucket_give_one_line(s3_bucket: str, tmp_path: Path) -> None:
    vault = f"s3://{s3_bucket}/prod"
    ok("vault", "init", "--vault", vault, *FAST_KDF)

    denied = run_cli("points", "list", "--vault", vault, env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    assert denied.code == 4
    assert "credentials" in one_line(denied)

    missing = run_cli("points", "list", "--vault", f"s3://no-such-bucket-{s3_bucket}/prod")
    assert missing.code == 5
    assert "no-such-bucket" in one_line(missing)

    bad = run_cli("points", "list", "--vault", f"s3://{s3_bucket}/prod?colour=blue")
    assert bad.code == 2
    one_line(bad)


def test_vault_url_carries_its_own_endpoint(s3_bucket: str, seaweed_endpoint: str) -> None:
    vault = f"s3://{s3_bucket}/prod?endpoint={seaweed_endpoint}&region=us-west-2"
    # No endpoint in the environment: only the URL says where the service is.
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    ok("vault", "init", "--vault", vault, *FAST_KDF, env=env)
    assert ok("points", "list", "--vault", vault, "--json", env=env).json() == []
