"""Opening a vault for a command: the catalog import that long commands start alongside."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_KDF, PASSWORD, ok

from reprieve.cli import common
from reprieve.vault.backends.base import Backend
from reprieve.vault.keys import Secret
from reprieve.vault.repository import Vault


def test_a_recording_command_starts_the_catalog_import_before_unlocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key derivation leaves the interpreter free: the import runs then,
    not later beside the walk and reads (see preload_catalog)."""
    location = str(tmp_path / "vault")
    ok("vault", "init", "--vault", location, *FAST_KDF)
    events: list[str] = []
    unlock = Vault.open

    def opening(backend: Backend, secret: Secret) -> Vault:
        events.append("unlock")
        return unlock(backend, secret)

    monkeypatch.setattr(common, "preload_catalog", lambda: events.append("catalog import"))
    monkeypatch.setattr(Vault, "open", staticmethod(opening))
    monkeypatch.setenv("REPRIEVE_PASSWORD", PASSWORD)

    vault = common.open_vault(location, None, None, preload=True)
    assert events == ["catalog import", "unlock"]
    assert vault.backend.location.endswith("vault")

    events.clear()
    common.open_vault(location, None, None)
    assert events == ["unlock"]
