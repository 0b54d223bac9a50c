"""Unlocking a vault sooner: the key derivation starts before the storage is reached.

``REPRIEVE_HOME/unlock-hints.json`` maps each vault location to the key
derivation parameters (Argon2id memory, iterations, lanes, and salt) of the
key file that last opened it. They are no secret: every key file in the vault
carries them for anyone who can list it, and no key or passphrase is kept
here. With a hint, the derivation (a fifth to a half of a second, run without
the GIL) starts as the command begins, while it imports its storage client
and fetches the vault's config and key files; a copy starts both vaults'.
A hint that no longer matches (the key was replaced) costs one derivation
and changes nothing else; a missing or unreadable file means no hints.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

from reprieve.home import home
from reprieve.vault.keys import Secret, derive_ahead
from reprieve.vault.repository import Vault

HINTS = "unlock-hints.json"


def start_unlocking(location: str, secret: Secret) -> bool:
    """Start deriving the key ``secret`` gives for the vault at ``location``,
    if a hint names its parameters; whether it was started."""
    kdf = _hints().get(location)
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        return False
    derive_ahead(secret, kdf)
    return True


def remember_unlock(location: str, vault: Vault) -> None:
    """Keep the parameters of the key file that opened ``vault`` for next time."""
    if vault.key_kdf.get("name") != "argon2id":
        return
    hints = _hints()
    if hints.get(location) == vault.key_kdf:
        return
    hints[location] = vault.key_kdf
    path = home() / HINTS
    temporary = path.with_name(f".{HINTS}.{os.getpid()}.{threading.get_ident()}")
    # A hint is a shortcut only: a home that cannot take it is no error.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(hints, out, sort_keys=True)
        os.replace(temporary, path)


def _hints() -> dict[str, Any]:
    try:
        found = json.loads((home() / HINTS).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
