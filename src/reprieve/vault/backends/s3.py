"""A vault in an S3-compatible bucket (AWS S3, Ceph, MinIO, SeaweedFS).

Location: ``s3://bucket/prefix?endpoint=URL&region=R&profile=P``. Anything
not in the URL comes from the usual AWS configuration (environment,
profiles, ``AWS_ENDPOINT_URL``), so one command can talk to two services.

A PUT is atomic in S3: readers see the whole object or nothing, which is
the backend contract. Retries with backoff for 5xx answers, throttling,
resets, and timeouts are botocore's "standard" mode; what still fails is
translated into reprieve errors here, at the boundary.

On a locked vault (S3 Object Lock, which implies a versioned bucket) the
backend reads every immutable object from its first version: an attacker
holding the vault's credentials can hide a locked object behind a delete
marker or overwrite it with a newer version, but cannot remove the version
reprieve wrote. reprieve's own deletes remove every version of a name, so
a version that is still there is one reprieve never deleted. Lock files and
hold records change in place and are read as usual.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.session
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
from isal.isal_zlib import crc32
from urllib3.exceptions import ProtocolError

from reprieve.errors import (
    NotFoundError,
    RefusedError,
    ReprieveError,
    StorageError,
    UsageError,
    WrongKeyError,
)
from reprieve.vault.backends.base import whole_second

BODY_ATTEMPTS = 4
_BODY_ERRORS = (
    IncompleteReadError,
    ResponseStreamingError,
    ReadTimeoutError,
    ConnectionClosedError,
    ProtocolError,
)
_DAMAGED_ON_THE_WAY = {"BadDigest", "XAmzContentChecksumMismatch"}
_CREDENTIAL_ERRORS = {
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
}


# The parsed S3 model, shared by every client the process makes (a copy has
# two): botocore itself, not boto3 and its transfer manager, which cost a
# tenth of a second to import and are not used here.
_LOADER: Any = None
_LOADER_LOCK = threading.Lock()

# Names that change in place: read as they are now, never pinned.
MUTABLE = ("locks/", "holds/")
HOLD_FOREVER = datetime.max.replace(tzinfo=UTC)


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


def _make_client(profile: str | None, options: dict[str, str]) -> Any:
    global _LOADER
    session = botocore.session.Session(profile=profile)
    # Sessions are not thread-safe, and a copy opens its two vaults at once.
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _LOADER)
        return session.create_client(
            "s3",
            region_name=options.get("region"),
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
                # Every upload carries a CRC32 the service checks (see put),
                # at a tenth of the cost of signing the payload with SHA-256.
                s3={"payload_signing_enabled": False},
            ),
        )


class S3Backend:
    def __init__(self, url: str) -> None:
        self.bucket, self.prefix, options = parse_s3_url(url)
        self.location = url.split("?", 1)[0]
        # Object Lock mode ("GOVERNANCE" or "COMPLIANCE") once the vault is locked.
        self.lock_mode: str | None = None
        self.can_lock = True
        self.storage_class = ""
        self.bypass_governance = False
        self._pinned: dict[str, tuple[str, int]] = {}
        self._listed: set[str] = set()
        self._pin_lock = threading.Lock()
        self._scan_lock = threading.Lock()
        profile = options.get("profile")
        try:
            self.client = _make_client(profile, options)
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {profile!r} not found") from exc
        except (BotoCoreError, ValueError) as exc:
            raise UsageError(f"cannot use S3 settings of {self.location}: {exc}") from exc
        self.region = options.get("region") or self.client.meta.region_name or ""

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
        version = self._version(name)
        if version is not None:
            extra["VersionId"] = version
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

    def put(
        self, name: str, data: bytes | bytearray | memoryview, retain_until: datetime | None = None
    ) -> None:
        # The service checks the CRC32 and refuses a body damaged on the way;
        # AWS also wants a checksum on every upload that carries a retention
        # date. Computed here, by ISA-L at over 20 GB/s (zlib manages 4, and
        # botocore would copy the body first). A bytearray (a pack's buffer)
        # goes out as it is.
        body = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        crc = crc32(body).to_bytes(4, "big")
        extra: dict[str, Any] = {
            "ChecksumAlgorithm": "CRC32",
            "ChecksumCRC32": base64.b64encode(crc).decode(),
        }
        if self.lock_mode and retain_until is not None:
            extra.update(
                ObjectLockMode=self.lock_mode,
                ObjectLockRetainUntilDate=whole_second(retain_until),
            )
        if self.storage_class and name.startswith("packs/"):
            extra["StorageClass"] = self.storage_class
        for attempt in range(BODY_ATTEMPTS):
            try:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=self._key(name), Body=body, **extra
                )
                break
            except ClientError as exc:
                # Refused for its checksum: damaged on the way, so sent again
                # (botocore does not retry a 400).
                code = exc.response.get("Error", {}).get("Code")
                if code not in _DAMAGED_ON_THE_WAY or attempt + 1 == BODY_ATTEMPTS:
                    raise self._translate(exc, "writing to", name) from exc
            except BotoCoreError as exc:
                raise self._translate(exc, "writing to", name) from exc
        version = response.get("VersionId")
        if self._pinnable(name) and version:
            with self._pin_lock:
                self._pinned.setdefault(name, (str(version), len(data)))

    def delete(self, name: str) -> None:
        if self.lock_mode:
            self._delete_versions(name)
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "deleting from", name) from exc

    def _head(self, name: str) -> dict[str, Any] | None:
        extra = {}
        if self._pinnable(name):
            try:
                extra["VersionId"] = self._version(name) or ""
            except NotFoundError:
                return None
        try:
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self._key(name), **extra
            )
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
        if self.lock_mode:
            found = self._scan_versions(prefix)
            yield from sorted(found.items())
            return
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._base(prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:], int(obj["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "listing", prefix) from exc

    def _base(self, prefix: str) -> str:
        base = self._key(prefix)
        if base and not base.endswith("/"):
            base += "/"
        return base

    # -- Object Lock ------------------------------------------------------

    def _pinnable(self, name: str) -> bool:
        return self.lock_mode is not None and not name.startswith(MUTABLE)

    def _version(self, name: str) -> str | None:
        """The version to read: the first one written, on a locked vault."""
        if not self._pinnable(name):
            return None
        top = name.split("/", 1)[0]
        with self._pin_lock:
            known = self._pinned.get(name)
            listed = top in self._listed
        if known is None and not listed:
            # One scan per prefix, even when reader threads miss at once.
            with self._scan_lock:
                with self._pin_lock:
                    known = self._pinned.get(name)
                    listed = top in self._listed
                if known is None and not listed:
                    exact = "" if "/" in name else name
                    self._scan_versions(top if "/" in name else name, exact=exact)
                    with self._pin_lock:
                        known = self._pinned.get(name)
        if known is None:
            raise NotFoundError(f"{name} is missing from the vault at {self.location}")
        return known[0]

    def _scan_versions(self, prefix: str, exact: str = "") -> dict[str, int]:
        """(name → size) under ``prefix``, each immutable name at its first version."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        oldest: dict[str, tuple[str, int]] = {}
        current: dict[str, int] = {}
        base = self._key(exact) if exact else self._base(prefix)
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                # Versions of one key come newest first: the last seen is the
                # first written. A name whose latest entry is a delete marker
                # has no current version.
                for v in page.get("Versions", []):
                    name = v["Key"][strip:]
                    if exact and name != exact:
                        continue
                    oldest[name] = (str(v["VersionId"]), int(v["Size"]))
                    if v.get("IsLatest"):
                        current[name] = int(v["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "listing", prefix) from exc
        found = {n: c for n, c in current.items() if not self._pinnable(n)}
        with self._pin_lock:
            for name, pin in oldest.items():
                if self._pinnable(name):
                    self._pinned.setdefault(name, pin)
                    found[name] = self._pinned[name][1]
            if not exact and "/" not in prefix.strip("/") and prefix:
                self._listed.add(prefix.strip("/"))
        return found

    def _versions_of(self, name: str) -> tuple[Sequence[str], Sequence[str]]:
        """(versions newest first, delete markers) of exactly ``name``, every page."""
        key = self._key(name)
        versions: tuple[str, ...] = ()
        markers: tuple[str, ...] = ()
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=key
            )
            for page in pages:
                versions += tuple(
                    str(v["VersionId"]) for v in page.get("Versions", []) if v["Key"] == key
                )
                markers += tuple(
                    str(m["VersionId"]) for m in page.get("DeleteMarkers", []) if m["Key"] == key
                )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "listing", name) from exc
        return versions, markers

    def _delete_versions(self, name: str) -> None:
        """Delete every version of ``name``; refused while any is locked."""
        key = self._key(name)
        versions, markers = self._versions_of(name)
        extra = {"BypassGovernanceRetention": True} if self.bypass_governance else {}
        try:
            for version in [*versions, *markers]:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "AccessDenied":
                raise RefusedError(
                    f"{name} is still locked by S3 Object Lock ({self.lock_mode}) "
                    "and cannot be deleted yet"
                ) from exc
            raise self._translate(exc, "deleting from", name) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "deleting from", name) from exc
        with self._pin_lock:
            self._pinned.pop(name, None)

    def first_version(self, name: str) -> bytes | None:
        """The first version ever written of ``name``, if any survives."""
        versions, _ = self._versions_of(name)
        if not versions:
            return None
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(name), VersionId=versions[-1]
            )
            body: bytes = response["Body"].read()
        except (ClientError, BotoCoreError, *_BODY_ERRORS) as exc:
            raise self._translate(exc, "reading from", name) from exc
        return body

    def retain(self, name: str, until: datetime) -> None:
        """Make ``name`` undeletable until ``until``; never shortens a date."""
        if not self.lock_mode:
            return
        head = self._head(name)
        if head is None:
            raise NotFoundError(f"{name} is missing from the vault at {self.location}")
        current = head.get("ObjectLockRetainUntilDate")
        if current is not None and current >= whole_second(until):
            return
        try:
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=self._key(name),
                VersionId=self._version(name),
                Retention={"Mode": self.lock_mode, "RetainUntilDate": whole_second(until)},
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "setting the retention of", name) from exc

    def locked_until(self, name: str) -> datetime | None:
        """Until when S3 refuses to delete ``name``; None when it is free."""
        if not self.lock_mode:
            return None
        head = self._head(name)
        if head is None:
            return None
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return HOLD_FOREVER
        until: datetime | None = head.get("ObjectLockRetainUntilDate")
        return until if until is not None and until > datetime.now(UTC) else None

    def hold(self, name: str, on: bool) -> None:
        """Set or clear the S3 legal hold on ``name``."""
        if not self.lock_mode:
            return
        try:
            self.client.put_object_legal_hold(
                Bucket=self.bucket,
                Key=self._key(name),
                VersionId=self._version(name),
                LegalHold={"Status": "ON" if on else "OFF"},
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "setting the legal hold of", name) from exc

    def object_lock(self) -> dict[str, Any] | None:
        """The bucket's Object Lock configuration; None when it has none."""
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
                return None
            raise self._translate(exc, "reading the Object Lock settings of", "") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "reading the Object Lock settings of", "") from exc
        config: dict[str, Any] = answer.get("ObjectLockConfiguration", {})
        return config if config.get("ObjectLockEnabled") == "Enabled" else None

    def usage(self) -> dict[str, int]:
        """Bytes stored, by S3 storage class."""
        by_class: dict[str, int] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._base("")
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    cls = str(obj.get("StorageClass") or "STANDARD")
                    by_class[cls] = by_class.get(cls, 0) + int(obj["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, "listing", "") from exc
        return by_class
