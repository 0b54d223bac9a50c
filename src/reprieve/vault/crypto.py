"""Encryption, blob ids, and key derivation for one vault.

Every encrypted object is an *envelope*::

    nonce (12 random bytes) || AES-256-GCM ciphertext || tag (16 bytes)

The associated data binds each envelope to its role (``b"point"``,
``b"index"``, ``b"pack-header"``) or, for blobs, to the blob id and the
blob's type and compression flags, so an envelope moved to another place
fails authentication instead of decrypting to the wrong thing.

Blob ids are BLAKE3 in keyed mode over the plaintext, keyed with the
vault's id key: equal plaintexts dedupe, and an id reveals nothing about
the content to someone without the key. Object names (packs, index files,
points) are unkeyed BLAKE3 of the stored bytes, so anyone can verify a
file's integrity without the key.

Random 96-bit nonces are safe for about 2**32 envelopes per data key; at
the default chunks of about 1 MiB that is several PiB per vault.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reprieve.errors import DamageError

NONCE_LEN = 12
TAG_LEN = 16
ENVELOPE_OVERHEAD = NONCE_LEN + TAG_LEN
ID_LEN = 32


def content_name(data: bytes | bytearray | memoryview) -> str:
    """The unkeyed BLAKE3 hex digest that names a stored object."""
    return blake3.blake3(data).hexdigest()


@dataclass(frozen=True)
class MasterKey:
    """The secrets of one vault, generated once at `vault init`."""

    data_key: bytes
    id_key: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> MasterKey:
        # The chunker seed randomises FastCDC's gear table, so chunk
        # boundaries (and thus sizes) cannot be used to fingerprint files.
        # FastCDC's cut test reads 48 bits of the gear hash, so 48 seed bits
        # are all that can matter.
        return cls(
            data_key=secrets.token_bytes(32),
            id_key=secrets.token_bytes(32),
            chunker_seed=secrets.randbits(48) or 1,
        )


class Cipher:
    """Seals and opens envelopes and computes blob ids with one master key."""

    def __init__(self, key: MasterKey) -> None:
        self._aead = AESGCM(key.data_key)
        self._id_key = key.id_key
        self.chunker_seed = key.chunker_seed

    def blob_id(self, plaintext: bytes | memoryview) -> bytes:
        return blake3.blake3(plaintext, key=self._id_key).digest()

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def seal_into(self, plaintext: bytes | memoryview, aad: bytes, out: memoryview) -> None:
        """Write the envelope into ``out`` (exactly ENVELOPE_OVERHEAD bytes
        longer than ``plaintext``): no buffer of its own to allocate, clear,
        and copy into a pack afterwards."""
        nonce = os.urandom(NONCE_LEN)
        out[:NONCE_LEN] = nonce
        self._aead.encrypt_into(nonce, plaintext, aad, out[NONCE_LEN:])

    def open(self, envelope: bytes | memoryview, aad: bytes, what: str) -> bytes:
        if len(envelope) < ENVELOPE_OVERHEAD:
            raise DamageError(f"{what} is truncated")
        view = memoryview(envelope)
        try:
            return self._aead.decrypt(view[:NONCE_LEN], view[NONCE_LEN:], aad)
        except InvalidTag as exc:
            raise DamageError(f"{what} fails authentication") from exc


def blob_aad(blob_id: bytes, blob_type: int, flags: int) -> bytes:
    return blob_id + bytes((blob_type, flags))
