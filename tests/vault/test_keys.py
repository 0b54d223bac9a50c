"""Key wrappers and key rotation: every key opens the same vault, and a removed key opens nothing.

Wrapping is checked on the library; rotation through `reprieve vault key ...` as an operator
runs it, ending with a restore of data written before the rotation.
"""

from __future__ import annotations

import base64
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_KDF, PASSWORD, ok, run_cli

from reprieve.vault import keys as keys_module
from reprieve.vault.crypto import MasterKey, content_name
from reprieve.vault.keys import KeyWrapper, Secret, derive_ahead, unwrap, wrap

NEW_PASSWORD = "a different and longer passphrase"
KEY_FILE_BYTES = bytes(range(64))


@pytest.fixture(scope="module")
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.mark.parametrize(
    "secret",
    [Secret.passphrase("pw"), Secret.keyfile(KEY_FILE_BYTES)],
    ids=["passphrase", "keyfile"],
)
def test_wrapper_opens_with_its_secret_after_a_trip_through_storage(
    master: MasterKey, secret: Secret
) -> None:
    wrapper = wrap(master, secret, kdf_memory_kib=8192)
    stored = wrapper.to_bytes()

    loaded = KeyWrapper.from_bytes(wrapper.name, stored)

    assert wrapper.name == content_name(stored)
    assert unwrap(loaded, secret) == master
    # The master key is sealed, not merely encoded.
    for key in (master.data_key, master.id_key):
        assert key not in stored
        assert base64.b64encode(key) not in stored


@pytest.mark.parametrize(
    ("secret", "wrong"),
    [
        (Secret.passphrase("pw"), Secret.passphrase("pW")),
        (Secret.keyfile(KEY_FILE_BYTES), Secret.keyfile(KEY_FILE_BYTES[::-1])),
        # The same bytes offered as the other kind of secret do not open it either.
        (Secret.keyfile(KEY_FILE_BYTES), Secret("passphrase", KEY_FILE_BYTES)),
        (Secret.passphrase("x" * 40), Secret.keyfile(b"x" * 40)),
    ],
    ids=["passphrase", "keyfile", "keyfile-as-passphrase", "passphrase-as-keyfile"],
)
def test_wrong_secret_opens_nothing(master: MasterKey, secret: Secret, wrong: Secret) -> None:
    wrapper = wrap(master, secret, kdf_memory_kib=8192)

    assert unwrap(wrapper, wrong) is None
    assert unwrap(wrapper, secret) == master


def test_two_wrappers_of_one_secret_differ(master: MasterKey) -> None:
    first = wrap(master, Secret.passphrase("pw"), kdf_memory_kib=8192)
    second = wrap(master, Secret.passphrase("pw"), kdf_memory_kib=8192)

    # Fresh salt and nonce each time: equal passwords are not visible as equal files.
    assert first.kdf["salt"] != second.kdf["salt"]
    assert first.data != second.data
    assert first.name != second.name


def derivations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every key derivation from here on."""
    seen: list[str] = []
    real = keys_module._derive_unchecked

    def counted(secret: Secret, kdf: dict[str, Any]) -> bytes:
        seen.append(threading.current_thread().name)
        return real(secret, kdf)

    monkeypatch.setattr(keys_module, "_derive_unchecked", counted)
    return seen


def test_a_key_derived_ahead_is_the_one_unwrap_uses(
    master: MasterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapper = wrap(master, Secret.passphrase("pw"), kdf_memory_kib=8192)
    seen = derivations(monkeypatch)

    derive_ahead(Secret.passphrase("pw"), wrapper.kdf)
    assert unwrap(wrapper, Secret.passphrase("pw")) == master
    assert seen == ["derive-ahead"]

    # Taken once: the next unwrap derives again, as does one with another secret.
    derive_ahead(Secret.passphrase("not it"), wrapper.kdf)
    assert unwrap(wrapper, Secret.passphrase("pw")) == master
    assert unwrap(wrapper, Secret.passphrase("not it")) is None
    # (the two derivations run side by side, in either order)
    assert sorted(seen) == ["MainThread", "derive-ahead", "derive-ahead"]


def keys(vault: str, **kw: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ok("vault", "key", "list", "--vault", vault, "--json", **kw).json()
    return rows


def current_key(vault: str, **kw: Any) -> str:
    (row,) = [r for r in keys(vault, **kw) if r["current"]]
    return str(row["id"])


def test_rotating_the_password_keeps_old_points_restorable(tmp_path: Path, vault: str) -> None:
    source = tmp_path / "data"
    source.mkdir()
    rng = random.Random(11)
    originals = {f"f{i}.bin": rng.randbytes(200_000 + i) for i in range(4)}
    for name, content in originals.items():
        (source / name).write_bytes(content)
    point = ok("backup", "files", source, "--vault", vault, "--resource", "r", "--json").json()
    old_key = current_key(vault)

    ok(
        "vault", "key", "add", "--vault", vault, *FAST_KDF,
        env={"REPRIEVE_NEW_PASSWORD": NEW_PASSWORD},
    )  # fmt: skip

    new_key = current_key(vault, password=NEW_PASSWORD)
    assert new_key != old_key
    assert {r["id"] for r in keys(vault)} == {old_key, new_key}
    assert current_key(vault) == old_key, "the old password must still open with its own key"

    ok("vault", "key", "remove", old_key[:12], "--vault", vault, password=NEW_PASSWORD)

    refused = run_cli("points", "list", "--vault", vault, "--json", password=PASSWORD)
    assert refused.code == 4, refused.stderr
    assert "wrong password" in refused.stderr
    assert [r["id"] for r in keys(vault, password=NEW_PASSWORD)] == [new_key]

    target = tmp_path / "restore"
    ok("restore", point["point"], "--vault", vault, "--target", target, password=NEW_PASSWORD)
    restored = target / source.relative_to("/")
    assert {p.name: p.read_bytes() for p in restored.iterdir()} == originals


def test_removing_the_key_in_use_is_refused(vault: str) -> None:
    only = current_key(vault)

    refused = run_cli("vault", "key", "remove", only[:12], "--vault", vault)

    assert refused.code == 2, refused.stderr
    assert "refusing to remove the key" in refused.stderr
    assert [r["id"] for r in keys(vault)] == [only]


def test_key_file_added_beside_a_password_opens_the_vault(tmp_path: Path, vault: str) -> None:
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(random.Random(5).randbytes(64))

    ok("vault", "key", "add", "--vault", vault, "--new-key-file", key_file)

    rows = keys(vault, password=None, env={"REPRIEVE_KEY_FILE": str(key_file)})
    assert sorted(r["kind"] for r in rows) == ["keyfile", "passphrase"]
    assert [r["kind"] for r in rows if r["current"]] == ["keyfile"]
    other = tmp_path / "other.key"
    other.write_bytes(random.Random(6).randbytes(64))
    refused = run_cli("points", "list", "--vault", vault, "--key-file", other, password=None)
    assert refused.code == 4, refused.stderr


def test_vaults_opened_at_once_in_threads_all_open(master: MasterKey) -> None:
    # A scheduler opens several vaults at once; multi-lane Argon2 derivations
    # running side by side in one process must not hang.
    wrapper = wrap(master, Secret.passphrase("pw"), kdf_memory_kib=8192)
    opened: list[MasterKey | None] = []

    def open_one() -> None:
        opened.append(unwrap(wrapper, Secret.passphrase("pw")))

    threads = [threading.Thread(target=open_one, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert opened == [master] * 4
