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
from reprieve.vault.crypto import Cipher, content_name

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
    """Collects blob envelopes until the pack is big enough to store."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.entries: list[BlobEntry] = []
        self.size = 0

    def add(
        self, blob_id: bytes, blob_type: int, flags: int, envelope: tuple[bytes, ...], raw: int
    ) -> None:
        """Append one envelope, given in parts that are stored one after another."""
        length = sum(map(len, envelope))
        self.entries.append(BlobEntry(blob_id, blob_type, flags, self.size, length, raw))
        self.parts.extend(envelope)
        self.size += length

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, cipher: Cipher) -> tuple[str, bytes]:
        """The pack's name and bytes; entries keep their offsets."""
        header = b"".join(
            RECORD.pack(e.id, e.type, e.flags, e.length, e.raw_length) for e in self.entries
        )
        sealed = cipher.seal(header, HEADER_AAD)
        self.parts += [sealed, TRAILER.pack(len(sealed), MAGIC)]
        data = b"".join(self.parts)
        self.parts = []
        return content_name(data), data


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
