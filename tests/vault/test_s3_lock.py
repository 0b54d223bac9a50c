"""The S3 backend on a bucket with Object Lock (real SeaweedFS): first-version
reads, deletes of every version, retention that never shortens, legal holds."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from reprieve.errors import NotFoundError, RefusedError
from reprieve.vault.backends.s3 import S3Backend


@pytest.fixture
def client(s3_env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])


@pytest.fixture
def bucket(client: Any, request: pytest.FixtureRequest) -> str:
    name = "b-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def locked_backend(bucket: str, mode: str = "COMPLIANCE") -> S3Backend:
    backend = S3Backend(f"s3://{bucket}/v")
    backend.lock_mode = mode
    return backend


def test_reads_follow_the_first_version_past_overwrites_and_delete_markers(
    bucket: str, client: Any
) -> None:
    writer = locked_backend(bucket)
    writer.put("packs/ab/ab01", b"genuine pack", datetime.now(UTC) + timedelta(minutes=5))
    writer.put("config", b"genuine config", datetime.now(UTC) + timedelta(minutes=5))
    writer.put("locks/l1", b"lock v1")
    for key in ("v/packs/ab/ab01", "v/config", "v/locks/l1"):
        for i in range(3):
            client.put_object(Bucket=bucket, Key=key, Body=f"overwrite {i}".encode())
    client.delete_object(Bucket=bucket, Key="v/packs/ab/ab01")
    client.delete_object(Bucket=bucket, Key="v/config")

    reader = locked_backend(bucket)  # a new process: nothing pinned yet
    assert reader.get("packs/ab/ab01") == b"genuine pack"
    assert reader.get_range("packs/ab/ab01", 0, 7) == b"genuine"
    assert reader.get("config") == b"genuine config"
    assert reader.first_version("config") == b"genuine config"
    assert reader.exists("packs/ab/ab01") and reader.size("packs/ab/ab01") == 12
    assert list(reader.list("packs")) == [("packs/ab/ab01", 12)]
    # Lock files change in place: they are read as they are now.
    assert reader.get("locks/l1") == b"overwrite 2"

    # An unlocked vault reads what S3 shows now.
    plain = S3Backend(f"s3://{bucket}/v")
    with pytest.raises(NotFoundError):
        plain.get("packs/ab/ab01")


def test_deletes_remove_every_version_and_are_refused_while_locked(
    bucket: str, client: Any
) -> None:
    backend = locked_backend(bucket, "GOVERNANCE")
    backend.put("locks/l1", b"one")
    backend.put("locks/l1", b"two")
    backend.delete("locks/l1")
    assert client.list_object_versions(Bucket=bucket, Prefix="v/locks/").get("Versions") is None

    until = datetime.now(UTC) + timedelta(minutes=10)
    backend.put("points/p1", b"point", until)
    assert backend.locked_until("points/p1") is not None
    with pytest.raises(RefusedError):
        backend.delete("points/p1")
    assert backend.get("points/p1") == b"point"
    backend.bypass_governance = True
    backend.delete("points/p1")
    assert not backend.exists("points/p1")


def test_retention_only_grows_and_holds_block_deletes(bucket: str) -> None:
    backend = locked_backend(bucket)
    soon = datetime.now(UTC) + timedelta(seconds=30)
    backend.put("packs/cd/cd01", b"data", soon)
    later = soon + timedelta(minutes=5)
    backend.retain("packs/cd/cd01", later)
    backend.retain("packs/cd/cd01", soon)  # shorter: left as it is
    locked = backend.locked_until("packs/cd/cd01")
    assert locked is not None and abs((locked - later).total_seconds()) < 1

    backend.put("index/i1", b"index")
    assert backend.locked_until("index/i1") is None
    backend.hold("index/i1", True)
    with pytest.raises(RefusedError):
        backend.delete("index/i1")
    backend.hold("index/i1", False)
    backend.delete("index/i1")
    assert not backend.exists("index/i1")
