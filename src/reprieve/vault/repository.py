"""A vault: one storage location, its keys, its index, and its points.

Layout (every object but ``config`` and ``locks/*`` is immutable and named
by the BLAKE3 of its bytes)::

    config                  JSON: format, vault id, region, chunker and pack
                            parameters, lock mode and retention bounds, pack
                            storage class, and a keyed MAC over all of it
    keys/<name>             key wrappers (see keys.py)
    packs/<2 hex>/<name>    encrypted blobs (see packs.py)
    index/<name>            where each blob lives (see index.py)
    points/<name>           recovery-point manifests (see points.py)
    locks/<random>          shared and exclusive locks (see locks.py)
    holds/<point name>      legal holds (see immutability.py)
    audit/<time>-<random>   audit records (see immutability.py)

Write order for anything new is packs, then index, then the point. Only a
point makes data reachable, so a crash at any moment leaves a consistent
vault with, at worst, unreferenced packs (or ``.tmp-*`` leftovers on a local
folder) that prune removes. Reading never trusts storage: every blob is
authenticated by AES-GCM under the vault key and re-hashed against its id.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import blake3
import zstandard

from reprieve.errors import (
    DamageError,
    NotFoundError,
    PointNotFound,
    RefusedError,
    ReprieveError,
    UsageError,
    VaultNotFound,
    WrongKeyError,
)
from reprieve.vault.backends.base import Backend
from reprieve.vault.backends.local import LocalBackend
from reprieve.vault.crypto import Cipher, MasterKey, blob_aad
from reprieve.vault.index import Index, Location, decode_index, encode_index
from reprieve.vault.keys import DEFAULT_KDF_MEMORY_KIB, KeyWrapper, Secret, unwrap, wrap
from reprieve.vault.packs import BlobEntry, BlobType, Compression, pack_path
from reprieve.vault.points import Point, decode_point, encode_point
from reprieve.vault.tree import Node, decode_tree

FORMAT = 1
# Blobs of one pack at most this far apart are fetched in one request.
SPAN_GAP = 1 << 20


@dataclass(frozen=True)
class VaultConfig:
    id: str
    created: str
    region: str
    chunk_min: int = 512 * 1024
    chunk_avg: int = 512 * 1024
    chunk_max: int = 8 * 1024 * 1024
    pack_size: int = 16 * 1024 * 1024
    zstd_level: int = 1
    format: int = FORMAT
    # Object Lock: "", "governance", or "compliance"; retention bounds in seconds
    # (0: none). On a folder, reprieve enforces them; on S3, so does storage.
    lock: str = ""
    min_retention_s: int = 0
    max_retention_s: int = 0
    storage_class: str = ""
    # The vault whose id key and chunker this one shares (`vault init --ids-from`).
    ids_from: str = ""

    def body(self) -> bytes:
        # Settings left at their empty default are not written, so configs
        # from before they existed keep their MAC.
        fields = {k: v for k, v in asdict(self).items() if not (k in _OPTIONAL and not v)}
        return json.dumps(fields, sort_keys=True).encode()

    def encode(self, master: MasterKey) -> bytes:
        return json.dumps(
            {**json.loads(self.body()), "mac": _config_mac(master, self.body())}
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> tuple[VaultConfig, str]:
        try:
            body = json.loads(raw)
            mac = str(body.pop("mac"))
            config = cls(**body)
            for name, value in asdict(config).items():
                default = type(getattr(VaultConfig, name, value))
                if type(value) is not default:
                    raise TypeError(f"{name} is {type(value).__name__}")
            if config.lock not in ("", "governance", "compliance"):
                raise ValueError(f"lock mode {config.lock!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DamageError("the vault's config is unreadable") from exc
        if config.format != FORMAT:
            raise UsageError(f"vault format {config.format} is not supported by this reprieve")
        return config, mac


_OPTIONAL = {"lock", "min_retention_s", "max_retention_s", "storage_class", "ids_from"}


def _config_mac(master: MasterKey, body: bytes) -> str:
    return blake3.blake3(body, key=blake3.blake3(b"config", key=master.id_key).digest()).hexdigest()


class PackCache:
    """The most recently used packs, each fetched once even when threads race."""

    def __init__(self, backend: Backend, count: int) -> None:
        self.backend = backend
        self.count = count
        self._packs: OrderedDict[str, Future[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def blob(self, pack: str, offset: int, length: int) -> memoryview:
        with self._lock:
            future = self._packs.get(pack)
            if future is None:
                future = self._packs[pack] = Future()
                owner = True
                while len(self._packs) > self.count:
                    self._packs.popitem(last=False)
            else:
                owner = False
                self._packs.move_to_end(pack)
        if owner:
            try:
                future.set_result(self.backend.get(pack_path(pack)))
            except BaseException as exc:
                with self._lock:
                    self._packs.pop(pack, None)
                future.set_exception(exc)
                raise
        return memoryview(future.result())[offset : offset + length]


def backend_for(location: str) -> Backend:
    if location.startswith("s3://"):
        from reprieve.vault.backends.s3 import S3Backend  # boto3 is slow to import

        return S3Backend(location)
    if "://" in location:
        raise UsageError(f"unsupported vault location {location!r}; give a folder or s3://")
    path = Path(location).absolute()
    if path.exists() and not path.is_dir():
        raise UsageError(f"vault location {location} is a file, not a folder")
    return LocalBackend(path)


_decompressors = threading.local()


def _decompress(data: bytes, raw_length: int) -> bytes:
    dctx = getattr(_decompressors, "dctx", None)
    if dctx is None:
        dctx = _decompressors.dctx = zstandard.ZstdDecompressor()
    out: bytes = dctx.decompress(data, max_output_size=raw_length)
    return out


class Vault:
    def __init__(
        self, backend: Backend, config: VaultConfig, master: MasterKey, key_name: str
    ) -> None:
        self.backend = backend
        self.config = config
        backend.lock_mode = config.lock.upper() or None
        backend.storage_class = config.storage_class
        self.master = master
        self.cipher = Cipher(master)
        self.key_name = key_name
        # The key derivation parameters of the key file that opened it.
        self.key_kdf: dict[str, Any] = {}
        self._index: Index | None = None
        self.damaged_points: dict[str, str] = {}
        self.index_bytes_written = 0
        self._packs: PackCache | None = None
        self._trees: OrderedDict[bytes, list[Node]] = OrderedDict()
        self._trees_lock = threading.Lock()

    @classmethod
    def create(
        cls,
        backend: Backend,
        secret: Secret,
        region: str = "",
        kdf_memory_kib: int = DEFAULT_KDF_MEMORY_KIB,
        ids_of: Vault | None = None,
        **settings: Any,
    ) -> Vault:
        """A new vault; ``settings`` are VaultConfig fields (lock, retention bounds…).

        With ``ids_of``, the new vault takes that vault's id key, chunker seed
        and chunk sizes, and keeps a data key of its own: the two name equal
        content alike, so copies between them move stored bytes without
        decompressing or re-hashing, and a backup into either dedupes
        against what a copy brought. Anyone holding both vaults' keys could
        already compare their content; no one else can.
        """
        if backend.exists("config"):
            raise UsageError(f"a vault already exists at {backend.location}")
        if any(True for _ in backend.list("")):
            raise UsageError(f"{backend.location} is not empty; give an empty or new folder")
        master = MasterKey.generate()
        if ids_of is not None:
            master = replace(
                master, id_key=ids_of.master.id_key, chunker_seed=ids_of.master.chunker_seed
            )
            source = ids_of.config
            settings.update(
                chunk_min=source.chunk_min,
                chunk_avg=source.chunk_avg,
                chunk_max=source.chunk_max,
                ids_from=source.id,
            )
        now = datetime.now(UTC)
        config = VaultConfig(
            id=secrets.token_hex(16),
            created=now.isoformat(timespec="seconds"),
            region=region or backend.region,
            **settings,
        )
        vault = cls(backend, config, master, "")
        # Locked from the start: without its config and keys nothing is readable.
        wrapper = wrap(master, secret, kdf_memory_kib)
        lock_for = timedelta(seconds=config.min_retention_s)
        until = datetime.now(UTC) + lock_for if config.lock else None
        backend.put(f"keys/{wrapper.name}", wrapper.to_bytes(), until)
        backend.put("config", config.encode(master), until)
        vault.key_name, vault.key_kdf = wrapper.name, wrapper.kdf
        return vault

    @classmethod
    def open(cls, backend: Backend, secret: Secret) -> Vault:
        raw: bytes | None = None
        try:
            raw = backend.get("config")
            return cls._open(backend, secret, raw)
        except NotFoundError as exc:
            if raw is not None:
                raise
            failure: ReprieveError = VaultNotFound(backend.location)
            failure.__cause__ = exc
        except (DamageError, WrongKeyError, UsageError) as exc:
            failure = exc
        # An attacker with the bucket's credentials may have hidden or
        # replaced the config of a locked vault; its first version survives.
        try:
            first = backend.first_version("config")
        except ReprieveError:
            first = None  # e.g. no right to list versions: report the first failure
        if first is None or first == raw:
            raise failure
        return cls._open(backend, secret, first)

    @classmethod
    def _open(cls, backend: Backend, secret: Secret, raw: bytes) -> Vault:
        config, mac = VaultConfig.decode(raw)
        backend.lock_mode = config.lock.upper() or None
        # A damaged key file must not lock out the holders of the others.
        broken: list[DamageError] = []
        for name, _ in backend.list("keys"):
            try:
                wrapper = KeyWrapper.from_bytes(name.removeprefix("keys/"), backend.get(name))
                master = unwrap(wrapper, secret)
            except DamageError as exc:
                broken.append(exc)
                continue
            if master is None:
                continue
            if not secrets.compare_digest(_config_mac(master, config.body()), mac):
                raise DamageError("the vault's config fails its MAC (tampered or damaged)")
            vault = cls(backend, config, master, wrapper.name)
            vault.key_kdf = wrapper.kdf
            return vault
        if broken:
            raise broken[0]
        what = "password" if secret.kind == "passphrase" else "key file"
        raise WrongKeyError(f"wrong {what} for the vault at {backend.location}")

    @staticmethod
    def key_wrappers(backend: Backend) -> list[KeyWrapper | str]:
        """Every key wrapper; the name alone for a key file that is unreadable."""
        found: list[KeyWrapper | str] = []
        for name, _ in backend.list("keys"):
            short = name.removeprefix("keys/")
            try:
                found.append(KeyWrapper.from_bytes(short, backend.get(name)))
            except DamageError:
                found.append(short)
        return found

    def add_key(self, secret: Secret, kdf_memory_kib: int = DEFAULT_KDF_MEMORY_KIB) -> str:
        wrapper = wrap(self.master, secret, kdf_memory_kib)
        # On a locked vault a new key is locked at once; the next point
        # extends it with the rest of what it needs.
        until = None
        if self.config.lock:
            until = datetime.now(UTC) + timedelta(seconds=self.config.min_retention_s)
        self.backend.put(f"keys/{wrapper.name}", wrapper.to_bytes(), until)
        return wrapper.name

    def remove_key(self, prefix: str) -> str:
        names = [name.removeprefix("keys/") for name, _ in self.backend.list("keys")]
        matches = [n for n in names if n.startswith(prefix)]
        if len(matches) != 1:
            raise NotFoundError(f"no single key matches {prefix!r}; see `reprieve vault key list`")
        name = matches[0]
        if name == self.key_name:
            raise UsageError(
                "refusing to remove the key this command was opened with; "
                "open the vault with another key to remove this one"
            )
        self.backend.delete(f"keys/{name}")
        return name

    # -- index and blobs ----------------------------------------------------

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = self.load_index()
        return self._index

    def load_index(self) -> Index:
        """The union of every readable index file.

        A damaged index file is skipped and recorded in ``index.damaged``:
        reads stay safe (every blob is authenticated), backups merely store
        again what they cannot find, and prune refuses to run until
        `vault rebuild-index` has replaced it.
        """
        index = Index()
        for name, _size in self.backend.list("index"):
            file_name = name.removeprefix("index/")
            try:
                packs = decode_index(self.cipher, file_name, self.backend.get(name))
            except DamageError as exc:
                index.damaged[file_name] = str(exc)
                continue
            for pack, locations in packs.items():
                index.add_locations(pack, locations, file_name)
            index.files.add(file_name)
        return index

    def reload_index(self) -> None:
        """Forget the cached index; the next use reads the index files again."""
        self._index = None

    def replace_index(self, packs: dict[str, list[BlobEntry]], keep: Collection[str] = ()) -> None:
        """Write one index file for ``packs``, then delete every other one
        (but those in ``keep``, which storage still locks).

        The new file exists before any old one is deleted, so a kill midway
        leaves both, which is valid: packs are immutable.
        """
        old = [name for name, _ in self.backend.list("index")]
        new = f"index/{self.write_index(packs)}" if packs else None
        for name in old:
            if name != new and name.removeprefix("index/") not in keep:
                # One that storage still locks stays; its packs are locked as long.
                with contextlib.suppress(RefusedError):
                    self.backend.delete(name)
        self.reload_index()

    def write_index(self, packs: dict[str, list[BlobEntry]]) -> str:
        name, data = encode_index(self.cipher, packs)
        self.backend.put(f"index/{name}", data)
        self.index.files.add(name)
        self.index_bytes_written = len(data)
        return name

    def stored_packs(self) -> dict[str, int]:
        """Every pack in storage, with its size."""
        return {name.rsplit("/", 1)[-1]: size for name, size in self.backend.list("packs")}

    def decode_blob(
        self, blob_id: bytes, btype: int, flags: int, raw: int, data: bytes | memoryview
    ) -> bytes:
        return self._open_blob(blob_id, btype, flags, raw, data)[0]

    def _open_blob(
        self,
        blob_id: bytes,
        btype: int,
        flags: int,
        raw: int,
        data: bytes | memoryview,
        rehash: bool = True,
    ) -> tuple[bytes, bytes | None]:
        """The verified plaintext, and the zstd form it was stored in (if any).

        AES-GCM already proves the envelope was sealed for this id with the
        vault's key; ``rehash`` also checks the plaintext against the id."""
        what = f"blob {blob_id.hex()[:12]}"
        plain = packed = self.cipher.open(data, blob_aad(blob_id, btype, flags), what)
        if flags == Compression.ZSTD:
            try:
                plain = _decompress(packed, raw)
            except zstandard.ZstdError as exc:
                raise DamageError(f"{what} does not decompress") from exc
        if len(plain) != raw or (rehash and self.cipher.blob_id(plain) != blob_id):
            raise DamageError(f"{what} does not match its id")
        return plain, packed if flags == Compression.ZSTD else None

    def shares_ids(self, other: Vault) -> bool:
        """Whether the two vaults name equal content alike (see ``create``)."""
        return hmac.compare_digest(self.master.id_key, other.master.id_key)

    def read_blob(self, blob_id: bytes) -> bytes:
        return self.read_blob_stored(blob_id)[0]

    def read_blob_stored(self, blob_id: bytes) -> tuple[bytes, bytes | None]:
        """The verified plaintext, and its compressed form when stored so."""
        loc = self.locate(blob_id)
        data: bytes | memoryview
        try:
            if self._packs is not None:
                data = self._packs.blob(loc.pack, loc.offset, loc.length)
            else:
                data = self.backend.get_range(pack_path(loc.pack), loc.offset, loc.length)
        except NotFoundError as exc:
            raise DamageError(f"pack {loc.pack[:12]} is missing") from exc
        return self._open_blob(blob_id, loc.type, loc.flags, loc.raw_length, data)

    def read_pack_blobs(
        self, pack: str, blob_ids: Sequence[bytes], rehash: bool = True
    ) -> Iterator[tuple[bytes, bytes, bytes | None]]:
        """(id, verified plaintext, stored zstd form or None) of blobs in one pack."""
        for loc, blob_id, data in self._pack_spans(pack, blob_ids):
            plain, packed = self._open_blob(
                blob_id, loc.type, loc.flags, loc.raw_length, data, rehash
            )
            yield blob_id, plain, packed

    def read_pack_stored(
        self, pack: str, blob_ids: Sequence[bytes]
    ) -> Iterator[tuple[bytes, bytes, Location]]:
        """(id, decrypted stored form, location) of blobs in one pack: compressed as
        stored, authenticated by AES-GCM for its id, type and compression."""
        for loc, blob_id, data in self._pack_spans(pack, blob_ids):
            what = f"blob {blob_id.hex()[:12]}"
            yield blob_id, self.cipher.open(data, blob_aad(blob_id, loc.type, loc.flags), what), loc

    def _pack_spans(
        self, pack: str, blob_ids: Sequence[bytes]
    ) -> Iterator[tuple[Location, bytes, memoryview]]:
        """(location, id, envelope) of blobs in one pack.

        Nearby blobs are fetched together, one request per run of blobs no
        more than ``SPAN_GAP`` apart, so reading most of a pack costs about
        one request and reading a few of it costs no more than their bytes.
        """
        located = sorted(((self.locate(b), b) for b in blob_ids), key=lambda lb: lb[0].offset)
        start = 0
        while start < len(located):
            end = start + 1
            while (
                end < len(located)
                and located[end][0].offset
                <= located[end - 1][0].offset + located[end - 1][0].length + SPAN_GAP
            ):
                end += 1
            first, last = located[start][0], located[end - 1][0]
            try:
                span = memoryview(
                    self.backend.get_range(
                        pack_path(pack), first.offset, last.offset + last.length - first.offset
                    )
                )
            except NotFoundError as exc:
                raise DamageError(f"pack {pack[:12]} is missing") from exc
            for loc, blob_id in located[start:end]:
                at = loc.offset - first.offset
                data = span[at : at + loc.length]
                if len(data) != loc.length:
                    raise DamageError(f"pack {pack[:12]} is shorter than its index says")
                yield loc, blob_id, data
            start = end

    def locate(self, blob_id: bytes) -> Location:
        """Where the index says a blob is; a blob it lacks is damage."""
        loc = self.index.get(blob_id)
        if loc is None:
            if self.index.damaged:
                raise DamageError(
                    f"blob {blob_id.hex()[:12]} is not in any readable index "
                    "(`reprieve vault rebuild-index` may recover it)"
                )
            raise DamageError(f"blob {blob_id.hex()[:12]} is missing from the index")
        return loc

    def cache_packs(self, count: int) -> None:
        """Read whole packs, keeping the last ``count``: for restores and copies,
        which read most of every pack they touch. On S3 this turns one request
        per blob into one per pack."""
        self._packs = PackCache(self.backend, count)

    def read_tree(self, tree_id: bytes) -> list[Node]:
        with self._trees_lock:
            cached = self._trees.get(tree_id)
            if cached is not None:
                self._trees.move_to_end(tree_id)
                return cached
        loc = self.index.get(tree_id)
        if loc is not None and loc.type != BlobType.TREE:
            raise DamageError(f"blob {tree_id.hex()[:12]} is not a tree")
        nodes = decode_tree(self.read_blob(tree_id), f"tree {tree_id.hex()[:12]}")
        with self._trees_lock:
            self._trees[tree_id] = nodes
            if len(self._trees) > 4096:
                self._trees.popitem(last=False)
        return nodes

    # -- points -------------------------------------------------------------

    def point_names(self) -> list[str]:
        return [name.removeprefix("points/") for name, _ in self.backend.list("points")]

    def load_point(self, name: str) -> Point:
        return decode_point(self.cipher, name, self.backend.get(f"points/{name}"))

    def points(self, resource: str | None = None) -> list[Point]:
        """Every readable point, oldest first; optionally of one resource.

        A point that fails authentication is skipped and named in
        ``damaged_points``: it can never be restored (its tree id is
        unreadable), so it must not block backups or listings of the others.
        `check` reports it, and prune may free what only it referenced.
        """
        found = []
        self.damaged_points = {}
        for name in self.point_names():
            try:
                found.append(self.load_point(name))
            except DamageError as exc:
                self.damaged_points[name] = str(exc)
        found = [p for p in found if resource is None or p.resource == resource]
        return sorted(found, key=lambda p: (p.time, p.id))

    def find_point(self, prefix: str) -> Point:
        if len(prefix) < 4:
            raise UsageError("give at least 4 characters of a point id")
        matches = [n for n in self.point_names() if n.startswith(prefix.lower())]
        if not matches:
            raise PointNotFound(prefix)
        if len(matches) > 1:
            raise UsageError(f"point id {prefix!r} is ambiguous; give more characters")
        return self.load_point(matches[0])

    def save_point(self, point: Point) -> str:
        """Write the point (locked until its retention date, where storage can)."""
        name, data = encode_point(self.cipher, point)
        until = point.retain_until
        self.backend.put(
            f"points/{name}", data, until if until and until > datetime.now(UTC) else None
        )
        point.id = name
        return name

    def forget_point(self, name: str) -> None:
        self.backend.delete(f"points/{name}")

    def stats(self) -> dict[str, Any]:
        sizes: dict[str, int] = {}
        for prefix in ("packs", "index", "points", "keys"):
            sizes[prefix] = sum(size for _, size in self.backend.list(prefix))
        return sizes
