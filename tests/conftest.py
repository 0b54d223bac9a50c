"""Shared fixtures: an isolated environment and a real `reprieve` process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pg import Postgres, start_postgres
from seaweed import Seaweed, start_seaweed

PASSWORD = "correct horse battery staple"
# Small Argon2id memory keeps each command's start fast; the format is the same.
FAST_KDF = ["--kdf-memory-kib", "8192"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long trials first: parallel workers then finish at about the same time.

    The sort is stable, so the tests of a module stay together and in order.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("REPRIEVE_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(
    *args: str | Path, password: str | None = PASSWORD, env: dict[str, str] | None = None
) -> Result:
    """Run `reprieve` as a real process and capture what it prints."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REPRIEVE_")}
    if password is not None:
        full_env["REPRIEVE_PASSWORD"] = password
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "reprieve", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ok(*args: str | Path, **kw: Any) -> Result:
    result = run_cli(*args, **kw)
    assert result.code == 0, f"exit {result.code}: {result.stderr}"
    return result


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MiB tmpfs to fill, in a folder any user may enter; skipped where one
    cannot be mounted (not root, or a container that forbids it)."""
    disk = Path(tempfile.mkdtemp(prefix="reprieve-disk-"))
    disk.chmod(0o755)
    command = ["mount", "-t", "tmpfs", "-o", "size=4m,mode=755", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(command, capture_output=True).returncode:
        disk.rmdir()
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
        shutil.rmtree(disk, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One real SeaweedFS S3 gateway for the whole run."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One real PostgreSQL server for the whole run; each test makes its own database."""
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


def use_seaweed(env: pytest.MonkeyPatch, server: Seaweed) -> None:
    """Point AWS clients, ours and those of `reprieve` processes, at ``server``."""
    for key, value in server.env.items():
        env.setenv(key, value)
    env.delenv("AWS_PROFILE", raising=False)


def _client(server: Seaweed) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"],
        region_name=server.env["AWS_DEFAULT_REGION"],
    )


def new_bucket(server: Seaweed, owner: str) -> str:
    """A new, empty bucket named after ``owner``, a test's or a fixture's node id."""
    name = "t-" + hashlib.sha1(owner.encode()).hexdigest()[:20]
    _client(server).create_bucket(Bucket=name)
    return name


def drop_bucket(server: Seaweed, name: str) -> None:
    """Delete the bucket and all it holds.

    SeaweedFS gives each bucket volumes of its own and frees them only with the
    bucket: a run that kept its buckets would fail its writes after about 70.
    """
    client = _client(server)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        if keys := [{"Key": obj["Key"]} for obj in page.get("Contents", [])]:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_env(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS settings for the test gateway, also set in this process."""
    use_seaweed(monkeypatch, seaweed)
    return seaweed.env


@pytest.fixture
def s3_bucket(
    s3_env: dict[str, str], seaweed: Seaweed, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A new, empty bucket named after the test, deleted after it."""
    name = new_bucket(seaweed, request.node.nodeid)
    yield name
    drop_bucket(seaweed, name)


@pytest.fixture(scope="module", params=["folder", "s3"])
def storage(request: pytest.FixtureRequest) -> str:
    """The backend of a test's vaults: every vault test runs on a folder and on S3.

    Module-scoped, so that a vault a module's fixture builds once and the
    tests that use it are on the same backend.
    """
    return str(request.param)


# For the few tests too slow to repeat on S3; each says why where it is used.
folder_only = pytest.mark.parametrize("storage", ["folder"], indirect=True, scope="module")


@pytest.fixture
def vault_base(storage: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test puts vaults, as f"{vault_base}/name": its folder, or a new bucket."""
    if storage == "s3":
        return "s3://" + str(request.getfixturevalue("s3_bucket"))
    return str(tmp_path)


def shared_vault_base(
    storage: str, request: pytest.FixtureRequest, env: pytest.MonkeyPatch, folder: Path
) -> str:
    """``vault_base`` for a module-scoped fixture; sets the AWS settings in ``env``."""
    if storage == "folder":
        return str(folder)
    server: Seaweed = request.getfixturevalue("seaweed")
    use_seaweed(env, server)
    name = new_bucket(server, f"{request.node.nodeid}::{request.fixturename}")
    request.addfinalizer(lambda: drop_bucket(server, name))
    return f"s3://{name}"


@pytest.fixture
def vault(vault_base: str) -> str:
    """A new, empty vault: its `--vault` location."""
    location = f"{vault_base}/vault"
    ok("vault", "init", "--vault", location, *FAST_KDF)
    return location


@pytest.fixture
def seaweed_endpoint(seaweed: Seaweed) -> str:
    return seaweed.endpoint
