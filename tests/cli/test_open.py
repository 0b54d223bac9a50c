"""Opening a vault for a command: the key derivation started early from a hint, and the
catalog import that long commands start alongside (a copy's once data moves)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import FAST_KDF, PASSWORD, ok

from reprieve.cli import common
from reprieve.cli import copy as copy_command
from reprieve.cli.unlock import HINTS
from reprieve.errors import WrongKeyError
from reprieve.vault import keys
from reprieve.vault.backends.base import Backend
from reprieve.vault.keys import Secret
from reprieve.vault.repository import Vault, backend_for


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


def test_the_key_derivation_starts_ahead_for_a_vault_opened_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = str(tmp_path / "vault")
    ok("vault", "init", "--vault", location, *FAST_KDF)
    # The maker of a vault leaves a hint too (here in the default home, ~/.reprieve).
    made = json.loads((tmp_path / "home" / ".reprieve" / HINTS).read_text())
    assert list(made) == [location] and made[location]["name"] == "argon2id"

    home = tmp_path / "unlock-home"
    monkeypatch.setenv("REPRIEVE_HOME", str(home))
    monkeypatch.setenv("REPRIEVE_PASSWORD", PASSWORD)
    derived_in: list[str] = []
    derive = keys._derive_unchecked

    def counted(secret: keys.Secret, kdf: dict[str, Any]) -> bytes:
        derived_in.append(threading.current_thread().name)
        return derive(secret, kdf)

    monkeypatch.setattr(keys, "_derive_unchecked", counted)

    first = common.open_vault(location, None, None)
    assert derived_in == ["MainThread"]
    # The hint is the opening key file's parameters, and nothing secret.
    (wrapper,) = [w for w in first.key_wrappers(first.backend) if isinstance(w, keys.KeyWrapper)]
    assert json.loads((home / HINTS).read_text()) == {location: wrapper.kdf}
    assert (home / HINTS).stat().st_mode & 0o077 == 0

    second = common.open_vault(location, None, None)
    assert derived_in == ["MainThread", "derive-ahead"]
    assert second.master == first.master

    monkeypatch.setenv("REPRIEVE_PASSWORD", "not the password")
    with pytest.raises(WrongKeyError):
        common.open_vault(location, None, None)


def test_a_copy_starts_the_catalog_import_as_data_moves_and_not_when_nothing_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import starts once the target is checked and before its first
    pack, and never for a copy with nothing to send (which records nothing)."""
    source, target = tmp_path / "a", tmp_path / "b"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_bytes(b"copied bytes " * 1000)
    ok("vault", "init", "--vault", source, *FAST_KDF)
    ok("vault", "init", "--vault", target, *FAST_KDF)
    ok("backup", "files", tmp_path / "data", "--vault", source, "--resource", "r")
    packs_when_called: list[int] = []

    def preload() -> None:
        packs_when_called.append(len(list(backend_for(str(target)).list("packs"))))

    monkeypatch.setattr(copy_command, "preload_catalog", preload)
    monkeypatch.setenv("REPRIEVE_PASSWORD", PASSWORD)
    args = ["--from", str(source), "--to", str(target), "--json"]
    first = CliRunner().invoke(copy_command.copy, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["points_copied"] == 1 and packs_when_called == [0]
    again = CliRunner().invoke(copy_command.copy, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["points_copied"] == 0 and packs_when_called == [0]
