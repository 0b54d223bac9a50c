"""The storage seam's contract, on a local folder and on real S3 (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprieve.errors import NotFoundError, UsageError
from reprieve.vault.backends.base import Backend
from reprieve.vault.backends.local import LocalBackend
from reprieve.vault.backends.s3 import S3Backend, parse_s3_url


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return LocalBackend(tmp_path / "vault")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Backend(f"s3://{bucket}/prod/vault")


def test_objects_round_trip_list_and_delete(backend: Backend) -> None:
    backend.put("packs/ab/abcdef", b"0123456789")
    backend.put("packs/cd/cdef01", memoryview(b"xyz"))
    backend.put("config", b"{}")
    assert backend.get("packs/ab/abcdef") == b"0123456789"
    assert backend.get_range("packs/ab/abcdef", 2, 3) == b"234"
    assert backend.get_range("packs/ab/abcdef", -4, 4) == b"6789"
    assert backend.size("packs/cd/cdef01") == 3
    assert backend.exists("config")
    assert sorted(backend.list("packs")) == [("packs/ab/abcdef", 10), ("packs/cd/cdef01", 3)]
    assert {name for name, _ in backend.list("")} == {
        "config",
        "packs/ab/abcdef",
        "packs/cd/cdef01",
    }
    backend.delete("packs/ab/abcdef")
    backend.delete("packs/ab/abcdef")  # deleting what is gone is not an error
    assert not backend.exists("packs/ab/abcdef")
    assert list(backend.list("packs")) == [("packs/cd/cdef01", 3)]


def test_missing_objects_raise_not_found(backend: Backend) -> None:
    with pytest.raises(NotFoundError):
        backend.get("points/nothing")
    with pytest.raises(NotFoundError):
        backend.size("points/nothing")
    assert list(backend.list("points")) == []


def test_s3_urls_carry_endpoint_region_and_profile() -> None:
    bucket, prefix, options = parse_s3_url(
        "s3://backups-west/prod/a?endpoint=http://127.0.0.1:8433&region=us-west-2&profile=west"
    )
    assert (bucket, prefix) == ("backups-west", "prod/a")
    assert options == {
        "endpoint": "http://127.0.0.1:8433",
        "region": "us-west-2",
        "profile": "west",
    }
    with pytest.raises(UsageError):
        parse_s3_url("s3://bucket/p?colour=blue")
    with pytest.raises(UsageError):
        parse_s3_url("s3:///nobucket")
