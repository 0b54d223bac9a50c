"""A vault in an S3-compatible bucket (AWS S3, Ceph, MinIO, SeaweedFS).

Location: ``s3://bucket/prefix?endpoint=URL&region=R&profile=P``. Anything
not in the URL comes from the usual AWS configuration (environment,
profiles, ``AWS_ENDPOINT_URL``), so one command can talk to two services.

A PUT is atomic in S3: readers see the whole object or nothing, which is
the backend contract. Retries with backoff for 5xx answers, throttling,
resets, and timeouts are botocore's "standard" mode; what still fails is
translated into reprieve errors here, at the boundary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)
from urllib3.exceptions import ProtocolError

from reprieve.errors import NotFoundError, ReprieveError, StorageError, UsageError, WrongKeyError

BODY_ATTEMPTS = 4
_BODY_ERRORS = (
    IncompleteReadError,
    ResponseStreamingError,
    ReadTimeoutError,
    ConnectionClosedError,
    ProtocolError,
)
_CREDENTIAL_ERRORS = {
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
}


def parse_s3_url(url: str) -> tuple[str, str, dict[str, str]]:
    """(bucket, prefix, options) of ``s3://bucket/prefix?option=value``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"bad S3 vault location {url!r}; use s3://bucket/prefix")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"endpoint", "region", "profile"}
    if unknown:
        raise UsageError(
            f"unknown option {sorted(unknown)[0]!r} in {url}; use endpoint, region, profile"
        )
    return parts.netloc, parts.path.strip("/"), options


class S3Backend:
    def __init__(self, url: str) -> None:
        self.bucket, self.prefix, options = parse_s3_url(url)
        self.location = url.split("?", 1)[0]
        try:
            session = boto3.Session(
                profile_name=options.get("profile"), region_name=options.get("region")
            )
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {options.get('profile')!r} not found") from exc
        except (BotoCoreError, ValueError) as exc:
            raise UsageError(f"AWS configuration for {self.location}: {exc}") from exc
        try:
            self.client = self._client(session, options)
        except (BotoCoreError, ValueError) as exc:
            raise UsageError(f"cannot use S3 settings of {self.location}: {exc}") from exc

    @staticmethod
    def _client(session: Any, options: dict[str, str]) -> Any:
        return session.client(
            "s3",
            endpoint_url=options.get("endpoint"),
            config=Config(
                # The AWS variables users know; defaults suit a flaky WAN.
                retries={
                    "mode": os.environ.get("AWS_RETRY_MODE", "standard"),
                    "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "8")),
                },
                max_pool_connections=16,
                connect_timeout=10,
                read_timeout=60,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _translate(self, exc: Exception, what: str, name: str = "") -> ReprieveError:
        where = f"{self.location}/{name}" if name else self.location
        if isinstance(exc, ParamValidationError):
            return UsageError(f"S3 refused the request for {where}: {str(exc).splitlines()[0]}")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFoundError(f"{name} is missing from the vault at {self.location}")
            if code == "NoSuchBucket":
                return NotFoundError(f"bucket {self.bucket} does not exist; create it first")
            if code in _CREDENTIAL_ERRORS:
                return WrongKeyError(
                    f"S3 refused the credentials for bucket {self.bucket} ({code}); "
                    "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or the profile"
                )
            return StorageError(
                f"{what} {where}: S3 answered {code or exc} after retries; "
                "rerun later (backup and copy resume)"
            )
        if isinstance(exc, NoCredentialsError):
            return WrongKeyError("no AWS credentials found; set AWS_ACCESS_KEY_ID and friends")
        if isinstance(exc, EndpointConnectionError):
            return StorageError(f"cannot reach the S3 endpoint for {self.location}: {exc}")
        return StorageError(
            f"{what} {where}: {str(exc).splitlines()[0]}; rerun later (backup and copy resume)"
        )

    def _read(self, name: str, **extra: str) -> bytes:
        """GET and read the body; a body cut short is fetched again.

        botocore retries requests, but not a response whose body breaks off
        mid-read, which on a long transfer is the commonest network fault.
        """
        for attempt in range(BODY_ATTEMPTS):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(name), **extra)
                body: bytes = response["Body"].read()
                return body
            except _BODY_ERRORS as exc:
                if attempt + 1 == BODY_ATTEMPTS:
                    raise self._translate(exc, "reading from", name) from exc
                time.sleep(0.2 * 2**attempt)
            except (ClientError, BotoCoreError) as exc:
                raise self._translate(exc, "reading from", name) from exc
        raise AssertionError("unreachable")

    def get(self, name: str) -> bytes:
        return self._read(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        span = f"bytes=-{-offset}" if offset < 0 else f"bytes={offset}-{offset + length - 1}"
        try:
            body = self._read(name, Range=span)
        except StorageError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, ClientError)
                and cause.response.get("Error", {}).get("Code") == "InvalidRange"
            ):
                return b""
            raise
        return body[:length]

    def put(self, name: str, data: bytes | memoryview) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=bytes(data))
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "writing to", name) from exc

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "deleting from", name) from exc

    def _head(self, name: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return head
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._translate(exc, "reading from", name) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "reading from", name) from exc

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def size(self, name: str) -> int:
        head = self._head(name)
        if head is None:
            raise NotFoundError(f"{name} is missing from the vault at {self.location}")
        return int(head["ContentLength"])

    def remove_leftovers(self, older_than_s: float) -> int:
        return 0  # a PUT is atomic: an interrupted one leaves nothing behind

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._key(prefix)
        if base and not base.endswith("/"):
            base += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:], int(obj["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "listing", prefix) from exc
