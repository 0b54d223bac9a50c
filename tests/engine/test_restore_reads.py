"""What a files restore reads from the vault: every pack once at most.

The vault is a real local folder; its backend only notes what is read. The
point has a file whose content another file far later in the tree shares,
with more packs in between than a restore keeps in memory, so a restore that
read file by file fetched that pack twice.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from reprieve.engine.backup import backup_files
from reprieve.engine.restore import RESTORE_PACK_CACHE, restore_files
from reprieve.vault.backends.local import LocalBackend
from reprieve.vault.keys import Secret
from reprieve.vault.repository import Vault

KiB = 1024


class ReadLog(LocalBackend):
    """A folder backend that counts the bytes read from each pack."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read: Counter[str] = Counter()

    def get(self, name: str) -> bytes:
        data = super().get(name)
        self.read[name] += len(data)
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = super().get_range(name, offset, length)
        self.read[name] += len(data)
        return data


def test_restore_reads_each_pack_once_and_writes_every_copy_of_shared_content(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    source = tmp_path / "data"
    shared = rng.randbytes(300 * KiB)
    (source / "a").mkdir(parents=True)
    (source / "a" / "shared.bin").write_bytes(shared)
    (source / "m").mkdir()
    for n in range(4 * RESTORE_PACK_CACHE):
        (source / "m" / f"fill-{n:02}.bin").write_bytes(rng.randbytes(300 * KiB))
    (source / "m" / "empty").write_bytes(b"")
    (source / "z").mkdir()
    (source / "z" / "copy.bin").write_bytes(shared)
    (source / "z" / "twice.bin").write_bytes(shared + shared)

    backend = ReadLog(tmp_path / "vault")
    vault = Vault.create(backend, Secret.passphrase("x"), kdf_memory_kib=8192, pack_size=256 * KiB)
    point = backup_files(vault, [str(source)], "r", {}).point
    packs = {name: size for name, size in backend.list("packs")}
    assert len(packs) > 2 * RESTORE_PACK_CACHE
    backend.read.clear()

    target = tmp_path / "restore"
    stats = restore_files(vault, point, target)

    restored = target / source.relative_to(source.anchor)
    for path in source.rglob("*"):
        if path.is_file():
            assert (restored / path.relative_to(source)).read_bytes() == path.read_bytes(), path
    assert stats.files == 4 * RESTORE_PACK_CACHE + 4 and not stats.damaged
    content_reads = {name: n for name, n in backend.read.items() if name.startswith("packs/")}
    too_much = {name: n for name, n in content_reads.items() if n > packs[name]}
    assert not too_much, f"packs read more than once: {too_much}"
    assert sum(content_reads.values()) <= sum(packs.values())
