"""Key wrappers: the master key, sealed under passphrases or key files.

A vault's master key never leaves its wrappers in clear. Each wrapper is one
JSON object at ``keys/<name>`` (name = BLAKE3 of the file)::

    {"format": 1, "kind": "passphrase" | "keyfile", "created": ISO-8601,
     "host": "...", "kdf": {...}, "data": base64(envelope)}

The key-encryption key comes from a passphrase through Argon2id (memory,
iterations, lanes, and salt recorded in ``kdf``) or from a key file's bytes
through HKDF-SHA256. The envelope is AES-256-GCM with associated data
``b"reprieve key"`` over the JSON master key. Adding a wrapper writes a new
file; removing one deletes a file; data is never rewritten.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from reprieve.errors import DamageError, UsageError
from reprieve.vault.crypto import NONCE_LEN, MasterKey, content_name

KEY_AAD = b"reprieve key"
DEFAULT_KDF_MEMORY_KIB = 64 * 1024
DEFAULT_KDF_ITERATIONS = 3
DEFAULT_KDF_LANES = 4
_ARGON2_LOCK = threading.Lock()
# Key-encryption keys being derived ahead of need, by secret and parameters.
_AHEAD: dict[tuple[str, bytes, str], Future[bytes]] = {}
_AHEAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Secret:
    """What unlocks a wrapper: a passphrase or the bytes of a key file."""

    kind: str
    value: bytes

    @classmethod
    def passphrase(cls, text: str) -> Secret:
        if not text:
            raise UsageError("the password is empty; set REPRIEVE_PASSWORD or --password-file")
        return cls("passphrase", text.encode())

    @classmethod
    def keyfile(cls, content: bytes) -> Secret:
        if len(content) < 32:
            raise UsageError("a key file must hold at least 32 bytes of random data")
        return cls("keyfile", content)


@dataclass(frozen=True)
class KeyWrapper:
    name: str
    kind: str
    created: str
    host: str
    kdf: dict[str, Any]
    data: bytes

    def to_bytes(self) -> bytes:
        body = {
            "format": 1,
            "kind": self.kind,
            "created": self.created,
            "host": self.host,
            "kdf": self.kdf,
            "data": base64.b64encode(self.data).decode(),
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, name: str, raw: bytes) -> KeyWrapper:
        try:
            body = json.loads(raw)
            return cls(
                name=name,
                kind=str(body["kind"]),
                created=str(body["created"]),
                host=str(body["host"]),
                kdf=dict(body["kdf"]),
                data=base64.b64decode(body["data"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DamageError(f"key file keys/{name} is unreadable") from exc


def _derive(secret: Secret, kdf: dict[str, Any]) -> bytes:
    try:
        return _derive_unchecked(secret, kdf)
    except (KeyError, TypeError, ValueError) as exc:
        raise DamageError(f"key derivation parameters {kdf!r} are unreadable") from exc


def _derive_unchecked(secret: Secret, kdf: dict[str, Any]) -> bytes:
    salt = base64.b64decode(kdf["salt"])
    if kdf["name"] == "argon2id":
        argon = Argon2id(
            salt=salt,
            length=32,
            iterations=int(kdf["iterations"]),
            lanes=int(kdf["lanes"]),
            memory_cost=int(kdf["memory_kib"]),
        )
        # Two multi-lane Argon2 derivations running at once in one process
        # never finish (OpenSSL's, as cryptography 50 uses it): one at a time.
        with _ARGON2_LOCK:
            return argon.derive(secret.value)
    if kdf["name"] == "hkdf-sha256":
        return HKDF(hashes.SHA256(), 32, salt, b"reprieve key file").derive(secret.value)
    raise DamageError(f"unknown key derivation {kdf['name']!r}")


def wrap(
    master: MasterKey, secret: Secret, kdf_memory_kib: int = DEFAULT_KDF_MEMORY_KIB
) -> KeyWrapper:
    salt = base64.b64encode(secrets.token_bytes(16)).decode()
    kdf: dict[str, Any]
    if secret.kind == "passphrase":
        kdf = {
            "name": "argon2id",
            "memory_kib": kdf_memory_kib,
            "iterations": DEFAULT_KDF_ITERATIONS,
            "lanes": DEFAULT_KDF_LANES,
            "salt": salt,
        }
    else:
        kdf = {"name": "hkdf-sha256", "salt": salt}
    plain = json.dumps(
        {
            "data_key": base64.b64encode(master.data_key).decode(),
            "id_key": base64.b64encode(master.id_key).decode(),
            "chunker_seed": master.chunker_seed,
        }
    ).encode()
    nonce = secrets.token_bytes(NONCE_LEN)
    data = nonce + AESGCM(_derive(secret, kdf)).encrypt(nonce, plain, KEY_AAD)
    unnamed = KeyWrapper(
        name="",
        kind=secret.kind,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        kdf=kdf,
        data=data,
    )
    raw = unnamed.to_bytes()
    return KeyWrapper(**{**unnamed.__dict__, "name": content_name(raw)})


def _ahead_key(secret: Secret, kdf: dict[str, Any]) -> tuple[str, bytes, str]:
    return secret.kind, secret.value, json.dumps(kdf, sort_keys=True)


def derive_ahead(secret: Secret, kdf: dict[str, Any]) -> None:
    """Start deriving, in the background, the key that ``secret`` gives under
    the parameters ``kdf`` (those of a key file seen before); an unwrap of a
    key file with the same parameters takes the result instead of deriving.

    Argon2 releases the GIL, so a command's imports and its connection to
    the storage go on meanwhile. Parameters that no longer match a key file
    cost the derivation and nothing else.
    """
    if secret.kind != "passphrase" or kdf.get("name") != "argon2id":
        return
    key = _ahead_key(secret, kdf)
    with _AHEAD_LOCK:
        if key in _AHEAD:
            return
        future = _AHEAD[key] = Future()

    def run() -> None:
        try:
            future.set_result(_derive(secret, kdf))
        except BaseException as exc:  # handed to the unwrap that takes it
            future.set_exception(exc)

    threading.Thread(target=run, name="derive-ahead", daemon=True).start()


def _derived(secret: Secret, kdf: dict[str, Any]) -> bytes:
    """The key for ``secret`` under ``kdf``: derived ahead, or now."""
    with _AHEAD_LOCK:
        future = _AHEAD.pop(_ahead_key(secret, kdf), None)
    if future is not None:
        with contextlib.suppress(DamageError):
            return future.result()
    return _derive(secret, kdf)


def unwrap(wrapper: KeyWrapper, secret: Secret) -> MasterKey | None:
    """The master key, or None when this secret does not open this wrapper."""
    if wrapper.kind != secret.kind:
        return None
    kek = _derived(secret, wrapper.kdf)
    try:
        plain = AESGCM(kek).decrypt(wrapper.data[:NONCE_LEN], wrapper.data[NONCE_LEN:], KEY_AAD)
    except InvalidTag:
        return None
    body = json.loads(plain)
    return MasterKey(
        data_key=base64.b64decode(body["data_key"]),
        id_key=base64.b64decode(body["id_key"]),
        chunker_seed=int(body["chunker_seed"]),
    )
