"""Packs: many encrypted blobs in one immutable object.

Layout of ``packs/<2 hex>/<name>`` (name = BLAKE3 of the whole file)::

    blob envelope 0 | blob envelope 1 | … | header envelope | trailer

    trailer = u32 little-endian length of the header envelope, then b"RPK1"
    header  = (after decryption with associated data b"pack-header")
              one 42-byte record per blob, in file order:
              blob id (32) | type u8 | flags u8 | stored length u32 | raw length u32

Blob offsets follow from the stored lengths. A blob envelope's associated
data is its id, type, and flags (see crypto.blob_aad), so a reader holding
only the pack and the key can verify every blob; the index is a cache of the
headers and can always be rebuilt from the packs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from reprieve.errors import DamageError
from reprieve.vault.backends.base import Backend
from reprieve.vault.crypto import ENVELOPE_OVERHEAD, Cipher, blob_aad, content_name

HEADER_AAD = b"pack-header"
RECORD = struct.Struct("<32sBBII")
TRAILER = struct.Struct("<I4s")
MAGIC = b"RPK1"
# Enough for the header of a pack of ~1 MiB chunks in one read.
HEADER_PROBE = 64 * 1024


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


class Compression(IntEnum):
    NONE = 0
    ZSTD = 1


@dataclass(frozen=True, slots=True)
class BlobEntry:
    id: bytes
    type: int
    flags: int
    offset: int
    length: int
    raw_length: int


def pack_path(name: str) -> str:
    return f"packs/{name[:2]}/{name}"


class PackBuilder:
    """Collects blob envelopes in one buffer until the pack is big enough to store.

    Blobs are encrypted straight into the buffer (:meth:`seal`), and
    :meth:`finish` hands the buffer itself to storage. A writer passes it on
    to its next pack once stored (``buffer``), so packs after the first
    neither allocate nor clear memory.
    """

    def __init__(self, buffer: bytearray | None = None) -> None:
        self.buffer = bytearray() if buffer is None else buffer
        self.entries: list[BlobEntry] = []
        self.size = 0

    def _reserve(self, n: int) -> memoryview:
        """A view of the next ``n`` bytes, the buffer grown if it is short.
        Release it before the buffer changes size."""
        end = self.size + n
        if end > len(self.buffer):
            self.buffer.extend(bytes(end - len(self.buffer)))
        return memoryview(self.buffer)[self.size : end]

    def _record(self, blob_id: bytes, blob_type: int, flags: int, length: int, raw: int) -> None:
        self.entries.append(BlobEntry(blob_id, blob_type, flags, self.size, length, raw))
        self.size += length

    def add(
        self, blob_id: bytes, blob_type: int, flags: int, envelope: bytes | memoryview, raw: int
    ) -> None:
        """Append an envelope sealed elsewhere."""
        with self._reserve(len(envelope)) as span:
            span[:] = envelope
        self._record(blob_id, blob_type, flags, len(envelope), raw)

    def seal(
        self,
        cipher: Cipher,
        blob_id: bytes,
        blob_type: int,
        flags: int,
        payload: bytes | memoryview,
        raw: int,
    ) -> None:
        """Encrypt a blob's stored form into the pack."""
        length = len(payload) + ENVELOPE_OVERHEAD
        with self._reserve(length) as span:
            cipher.seal_into(payload, blob_aad(blob_id, blob_type, flags), span)
        self._record(blob_id, blob_type, flags, length, raw)

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, cipher: Cipher) -> tuple[str, bytearray]:
        """The pack's name and bytes (the buffer, cut to length); entries keep
        their offsets."""
        header = b"".join(
            RECORD.pack(e.id, e.type, e.flags, e.length, e.raw_length) for e in self.entries
        )
        sealed = cipher.seal(header, HEADER_AAD)
        tail = sealed + TRAILER.pack(len(sealed), MAGIC)
        with self._reserve(len(tail)) as span:
            span[:] = tail
        self.size += len(tail)
        del self.buffer[self.size :]
        return content_name(self.buffer), self.buffer


def parse_header(cipher: Cipher, name: str, tail: bytes, file_size: int) -> list[BlobEntry]:
    """Entries from the end of a pack; ``tail`` must hold header and trailer."""
    if len(tail) < TRAILER.size:
        raise DamageError(f"pack {name} is truncated")
    hlen, magic = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    if magic != MAGIC or hlen + TRAILER.size > min(len(tail), file_size):
        raise DamageError(f"pack {name} has a damaged trailer")
    start = len(tail) - TRAILER.size - hlen
    header = cipher.open(tail[start : start + hlen], HEADER_AAD, f"header of pack {name}")
    if len(header) % RECORD.size:
        raise DamageError(f"pack {name} has a damaged header")
    entries = []
    offset = 0
    for blob_id, btype, flags, length, raw in RECORD.iter_unpack(header):
        entries.append(BlobEntry(blob_id, btype, flags, offset, length, raw))
        offset += length
    if offset + hlen + TRAILER.size != file_size:
        raise DamageError(f"pack {name} size does not match its header")
    return entries


def read_header(backend: Backend, cipher: Cipher, name: str, size: int) -> list[BlobEntry]:
    """A pack's entries, read from its end: one read, two for long headers."""
    path = pack_path(name)
    tail = backend.get_range(path, max(0, size - HEADER_PROBE), HEADER_PROBE)
    if len(tail) >= TRAILER.size:
        span = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)[0] + TRAILER.size
        if len(tail) < span <= size:
            tail = backend.get_range(path, size - span, span)
    return parse_header(cipher, name, tail, size)
