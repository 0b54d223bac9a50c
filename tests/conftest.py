"""Shared fixtures: an isolated environment and a real `reprieve` process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from seaweed import Seaweed, start_seaweed

PASSWORD = "correct horse battery staple"
# Small Argon2id memory keeps each command's start fast; the format is the same.
FAST_KDF = ["--kdf-memory-kib", "8192"]


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
def vault(tmp_path: Path) -> Path:
    """A new, empty vault in a local folder."""
    location = tmp_path / "vault"
    ok("vault", "init", "--vault", location, *FAST_KDF)
    return location


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One real SeaweedFS S3 gateway for the whole run."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS settings for the test gateway, also set in this process."""
    for key, value in seaweed.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return seaweed.env


@pytest.fixture
def s3_bucket(s3_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A new, empty bucket named after the test."""
    import boto3

    name = "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture
def seaweed_endpoint(seaweed: Seaweed) -> str:
    return seaweed.endpoint
