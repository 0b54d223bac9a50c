"""A vault's stored objects, reached behind reprieve's back: in a folder or an S3 bucket.

Tests that inspect or damage a vault (flip a byte in a pack, delete an index
file, plant another process's lock) go through a VaultStore, so that one
test body runs on both backends. Names are the vault's own
(``packs/ab/ab12…``), and the store shows storage as it is: in a folder that
includes the ``.tmp-*`` files of interrupted writes, which reprieve never lists.

The S3 side uses boto3 directly, not reprieve's backend, so a bug there cannot
hide itself; it finds the gateway through the AWS variables the tests set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3


class VaultStore(ABC):
    location: str

    @staticmethod
    def at(location: str | Path) -> VaultStore:
        return BucketStore(str(location)) if is_s3(location) else FolderStore(Path(location))

    @abstractmethod
    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Name and size of every object whose name starts with ``prefix``."""

    @abstractmethod
    def read(self, name: str) -> bytes: ...

    @abstractmethod
    def write(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    def names(self, prefix: str = "") -> list[str]:
        """The objects whose names start with ``prefix``, sorted."""
        return sorted(self.sizes(prefix))

    def size(self, name: str) -> int:
        return self.sizes(name)[name]

    def flip(self, name: str, offset: int) -> None:
        """Damage one byte of ``name`` in place, as bit rot would."""
        data = bytearray(self.read(name))
        data[offset] ^= 0x5A
        self.write(name, bytes(data))


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


class FolderStore(VaultStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def sizes(self, prefix: str = "") -> dict[str, int]:
        found: dict[str, int] = {}
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for filename in filenames:
                path = Path(dirpath, filename)
                name = path.relative_to(self.root).as_posix()
                # A running reprieve may rename or delete the file meanwhile.
                if name.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        found[name] = path.stat().st_size
        return found

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def delete(self, name: str) -> None:
        (self.root / name).unlink()

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()


class BucketStore(VaultStore):
    def __init__(self, location: str) -> None:
        parts = urlsplit(location)
        self.location = location
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        endpoint = parse_qs(parts.query).get("endpoint", [None])[-1]
        self.client: Any = boto3.client("s3", endpoint_url=endpoint)

    def key(self, name: str) -> str:
        """The S3 key of the vault object ``name``."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def sizes(self, prefix: str = "") -> dict[str, int]:
        strip = len(self.key(""))
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix)
        )
        return {
            obj["Key"][strip:]: int(obj["Size"])
            for page in pages
            for obj in page.get("Contents", [])
        }

    def read(self, name: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        return body

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def exists(self, name: str) -> bool:
        return name in self.sizes(name)

    def copy_in(self, source: BucketStore) -> None:
        """Every object of ``source``, copied inside the service without passing through here."""
        for name in source.sizes():
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.key(name),
                CopySource={"Bucket": source.bucket, "Key": source.key(name)},
            )

    def delete_all(self) -> None:
        keys = [{"Key": self.key(name)} for name in self.sizes()]
        for start in range(0, len(keys), 1000):  # the most one request may delete
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
            )


def copy_vault(source: str, target: str) -> None:
    """A new vault at ``target`` holding every object of ``source``, on the same backend."""
    src, dst = VaultStore.at(source), VaultStore.at(target)
    if isinstance(src, BucketStore) and isinstance(dst, BucketStore):
        dst.copy_in(src)
    else:
        assert isinstance(src, FolderStore) and isinstance(dst, FolderStore)
        # Keeps empty folders and file times, as a copied folder would.
        shutil.copytree(src.root, dst.root)


def remove_vault(location: str) -> None:
    store = VaultStore.at(location)
    if isinstance(store, FolderStore):
        shutil.rmtree(store.root)
    elif isinstance(store, BucketStore):
        store.delete_all()
