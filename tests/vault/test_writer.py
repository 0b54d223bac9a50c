"""The blob writer: what it compresses, that every blob reads back, failures, and deduplication.

Each test drives the real BlobWriter into a real vault in a local folder and checks the
result through the vault's own index and read path.
"""

from __future__ import annotations

import io
import random
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from reprieve.errors import DamageError, StorageError
from reprieve.vault import writer as writer_module
from reprieve.vault.backends.local import LocalBackend
from reprieve.vault.index import Location
from reprieve.vault.keys import Secret
from reprieve.vault.packs import BlobType, Compression
from reprieve.vault.repository import Vault
from reprieve.vault.writer import PROBE, READ_BLOCKS, BlobWriter, StoredBlob

KiB = 1024
MiB = 1024 * KiB


def new_vault(backend: LocalBackend, **settings: Any) -> Vault:
    """A vault with a cheap key derivation; ``settings`` are VaultConfig fields."""
    return Vault.create(backend, Secret.passphrase("x"), kdf_memory_kib=8192, **settings)


def log_text(rng: random.Random, size: int) -> bytes:
    words = b"INFO WARN ERROR request=ok latency_ms user_id order_id tenant invoice".split()
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=rng.randint(4, 12))) + b"\n"
    return bytes(out[:size])


def located(vault: Vault, blob_id: bytes) -> Location:
    loc = vault.index.get(blob_id)
    assert loc is not None, f"blob {blob_id.hex()[:12]} is not in the index"
    return loc


def stored_flags(vault: Vault, blob_id: bytes) -> Compression:
    return Compression(located(vault, blob_id).flags)


def test_random_blobs_are_stored_raw_text_compressed_and_all_read_back(tmp_path: Path) -> None:
    rng = random.Random(1)
    vault = new_vault(LocalBackend(tmp_path / "vault"))
    blobs = {
        "random": rng.randbytes(2 * MiB),
        "text": log_text(rng, 2 * MiB),
        "small text": log_text(rng, 10 * KiB),  # stored in the caller's thread
        "tree": log_text(rng, 300 * KiB),
    }

    with BlobWriter(vault) as writer:
        ids = {
            name: writer.add(data, BlobType.TREE if name == "tree" else BlobType.DATA)
            for name, data in blobs.items()
        }
        assert writer.flush() is not None

    assert stored_flags(vault, ids["random"]) is Compression.NONE
    assert stored_flags(vault, ids["text"]) is Compression.ZSTD
    assert stored_flags(vault, ids["small text"]) is Compression.ZSTD
    for name, data in blobs.items():
        assert vault.read_blob(ids[name]) == data, name
    # One pack per blob type.
    assert len(list(vault.backend.list("packs"))) == 2
    # A fresh read of the index file finds the same blobs.
    vault.reload_index()
    assert all(blob_id in vault.index for blob_id in ids.values())


def test_probe_of_the_first_16_kib_decides_for_a_large_blob(tmp_path: Path) -> None:
    """Blobs over 4 x PROBE are compressed only if their first PROBE bytes compress.

    So a blob that is random at its start and zeros after is stored raw when large,
    although it would shrink to almost nothing: the probe trades that rare case for
    not compressing every large random chunk in full. Up to 4 x PROBE the writer
    tries the whole blob.
    """
    rng = random.Random(2)
    vault = new_vault(LocalBackend(tmp_path / "vault"))
    large = rng.randbytes(PROBE) + bytes(4 * MiB - PROBE)
    at_limit = rng.randbytes(PROBE) + bytes(3 * PROBE)

    with BlobWriter(vault) as writer:
        large_id, at_limit_id = writer.add(large), writer.add(at_limit)
        writer.flush()

    assert stored_flags(vault, large_id) is Compression.NONE
    assert stored_flags(vault, at_limit_id) is Compression.ZSTD
    assert vault.read_blob(large_id) == large
    assert vault.read_blob(at_limit_id) == at_limit


class PacksFail(LocalBackend):
    """A local folder that refuses every pack, as a full or read-only bucket would."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.raised: list[StorageError] = []

    def put(
        self, name: str, data: bytes | bytearray | memoryview, retain_until: datetime | None = None
    ) -> None:
        if name.startswith("packs/"):
            error = StorageError(f"writing {name}: refused by the test backend")
            self.raised.append(error)
            raise error
        super().put(name, data, retain_until)


def test_failed_pack_write_surfaces_from_flush_and_writes_no_index(tmp_path: Path) -> None:
    rng = random.Random(3)
    backend = PacksFail(tmp_path / "vault")
    vault = new_vault(backend)
    blobs = [rng.randbytes(size) for size in (300 * KiB, 1 * MiB, 5 * KiB)]

    with BlobWriter(vault) as writer:
        ids = [writer.add(data) for data in blobs]
        writer.add(log_text(rng, 20 * KiB), BlobType.TREE)
        with pytest.raises(StorageError) as failed:
            writer.flush()

    assert any(failed.value is error for error in backend.raised), failed.value
    assert list(backend.list("index")) == []
    assert list(backend.list("packs")) == []
    assert not any(blob_id in vault.index for blob_id in ids)


def test_the_same_data_is_stored_once(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(400 * KiB)
    vault = new_vault(LocalBackend(tmp_path / "vault"))

    with BlobWriter(vault) as writer:
        first, second = writer.add(data), writer.add(bytes(data))
        writer.flush()
    assert first == second
    assert writer.stats.blobs_new == 1
    assert len(vault.index) == 1

    # Once indexed, a later writer stores nothing and writes no index file.
    with BlobWriter(vault) as later:
        assert later.add(data) == first
        assert later.flush() is None
    assert later.stats.blobs_new == 0
    assert len(list(vault.backend.list("packs"))) == len(list(vault.backend.list("index"))) == 1


def test_stored_blobs_of_a_run_are_sealed_once_each_into_full_packs(tmp_path: Path) -> None:
    """add_stored, a copy's fast path: a run of blobs in their stored form,
    sealed as given (raw here, zstd there), each once; what the vault holds
    already is skipped."""
    rng = random.Random(5)
    vault = new_vault(LocalBackend(tmp_path / "vault"), pack_size=256 * KiB)
    held = rng.randbytes(50 * KiB)
    with BlobWriter(vault) as writer:
        held_id = writer.add(held)
        writer.flush()
    text = log_text(rng, 300 * KiB)
    zipped = zstandard.ZstdCompressor().compress(text)
    raws = [rng.randbytes(size * KiB) for size in (100, 200, 120)]
    raw0, raw1, raw2 = (
        (vault.cipher.blob_id(raw), BlobType.DATA, raw, Compression.NONE, len(raw)) for raw in raws
    )
    text_blob = (vault.cipher.blob_id(text), BlobType.DATA, zipped, Compression.ZSTD, len(text))
    held_blob = (held_id, BlobType.DATA, held, Compression.NONE, len(held))
    first: list[StoredBlob] = [raw0, text_blob, raw1, raw0]  # raw0 twice in one run
    second: list[StoredBlob] = [raw2, raw1, held_blob]  # raw1 again; held is in the vault

    with BlobWriter(vault) as copying:
        copying.add_stored(first)
        copying.add_stored(second)
        copying.flush()
    assert copying.stats.blobs_new == 4
    for raw in raws:
        assert vault.read_blob(vault.cipher.blob_id(raw)) == raw
    assert vault.read_blob(vault.cipher.blob_id(text)) == text
    assert stored_flags(vault, vault.cipher.blob_id(text)) is Compression.ZSTD
    # raw0, the text and raw1 fill a 256 KiB pack, raw2 waits for the flush
    # in another, and the held blob stays where it was.
    packs = {located(vault, blob_id).pack for blob_id, *_ in first + second}
    assert len(packs) == 3


def test_a_read_block_is_used_again_only_once_its_chunks_are_stored(tmp_path: Path) -> None:
    """Reading many files through the kept read blocks: a chunk still waiting
    to be stored keeps its bytes however many files are read after it, and
    once chunks are let go the same few blocks serve every file."""
    rng = random.Random(7)
    held_data = rng.randbytes(3 * MiB)
    other = rng.randbytes(6 * MiB)
    vault = new_vault(LocalBackend(tmp_path / "vault"))

    with BlobWriter(vault) as writer:
        held = list(writer.chunks(io.BytesIO(held_data), len(held_data)))
        assert b"".join(held) == held_data
        # Far more than the kept blocks hold: they go round many times. The
        # buffers seen are kept alive here, so a new one cannot reuse an id.
        buffers: dict[int, object] = {}
        for _ in range(12 * READ_BLOCKS):
            views = list(writer.chunks(io.BytesIO(other), len(other)))
            assert b"".join(views) == other
            buffers.update((id(view.obj), view.obj) for view in views)
            del views
        assert b"".join(held) == held_data
        assert len(buffers) <= READ_BLOCKS

        # Files smaller than a block follow one another in it.
        small = [rng.randbytes(300 * KiB) for _ in range(3)]
        cut = [list(writer.chunks(io.BytesIO(data), len(data))) for data in small]
        assert [b"".join(chunks) for chunks in cut] == small
        assert len({id(chunk.obj) for chunks in cut for chunk in chunks}) == 1

        ids = [writer.add(chunk) for chunk in held]
        writer.flush()
    assert b"".join(vault.read_blob(blob_id) for blob_id in ids) == held_data


def test_a_blob_that_takes_a_pack_past_its_buffer_grows_the_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pack buffers are made for the pack size and a little more; a last blob
    larger than that little more must still land whole."""
    monkeypatch.setattr(writer_module, "PACK_SLACK", 0)
    vault = new_vault(LocalBackend(tmp_path / "vault"), pack_size=256 * KiB)
    blobs = [random.Random(n).randbytes(size * KiB) for n, size in enumerate((200, 300, 700))]
    with BlobWriter(vault) as writer:
        ids = [writer.add(blob) for blob in blobs]
        writer.flush()
    assert [vault.read_blob(blob_id) for blob_id in ids] == blobs


class GatedStores(BlobWriter):
    """A writer whose store pool holds every blob until ``gate`` opens (small
    blobs, stored by the caller, go through)."""

    def __init__(self, vault: Vault) -> None:
        super().__init__(vault)
        self.gate = threading.Event()

    def _store(self, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name.startswith("store"):
            assert self.gate.wait(20)
        super()._store(*args, **kwargs)


def test_a_reader_waits_for_a_read_block_while_its_chunks_are_being_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every kept block holding chunks the store pool has not finished,
    the next read waits for the pool and then reuses a kept block: memory
    stays at the kept blocks, no buffer of its own is made."""
    monkeypatch.setattr(writer_module, "READ_BLOCK", MiB)
    monkeypatch.setattr(writer_module, "READ_BLOCKS", 2)
    vault = new_vault(
        LocalBackend(tmp_path / "vault"),
        chunk_min=192 * KiB,
        chunk_avg=256 * KiB,
        chunk_max=512 * KiB,
    )
    files = [random.Random(n).randbytes(900 * KiB) for n in range(3)]
    writer = GatedStores(vault)
    with writer:
        ids: list[bytes] = []
        blocks: dict[int, object] = {}
        for data in files[:2]:
            views = list(writer.chunks(io.BytesIO(data), len(data)))
            blocks.update((id(view.obj), view.obj) for view in views)
            ids.extend(writer.add(view) for view in views)
            del views
        assert len(blocks) == 2

        third: list[memoryview] = []

        def read_third() -> None:
            third.extend(writer.chunks(io.BytesIO(files[2]), len(files[2])))

        reader = threading.Thread(target=read_third)
        reader.start()
        reader.join(0.3)
        assert reader.is_alive(), "the read went ahead while every block was in use"
        writer.gate.set()
        reader.join(20)
        assert not reader.is_alive()
        assert b"".join(third) == files[2]
        assert {id(view.obj) for view in third} <= blocks.keys()
        ids.extend(writer.add(view) for view in third)
        third.clear()
        writer.flush()
    assert b"".join(vault.read_blob(blob_id) for blob_id in ids) == b"".join(files)


class MeetingPuts(LocalBackend):
    """A local folder whose pack writes each wait until ``count`` are under way at once."""

    def __init__(self, root: Path, count: int) -> None:
        super().__init__(root)
        self.meeting = threading.Barrier(count, timeout=20)

    def put(
        self, name: str, data: bytes | bytearray | memoryview, retain_until: datetime | None = None
    ) -> None:
        if name.startswith("packs/"):
            self.meeting.wait()
        super().put(name, data, retain_until)


@pytest.mark.parametrize("uploads", [2, 3])
def test_the_writer_stores_as_many_packs_at_once_as_it_is_given(
    tmp_path: Path, uploads: int
) -> None:
    backend = MeetingPuts(tmp_path / "vault", uploads)
    vault = new_vault(backend, pack_size=256 * KiB)
    blobs = [random.Random(n).randbytes(200 * KiB) for n in range(4 * uploads)]

    with BlobWriter(vault, uploads=uploads) as writer:
        ids = [writer.add(blob) for blob in blobs]
        writer.flush()
    # Packs met in groups of ``uploads``, none left waiting for a partner.
    assert backend.meeting.n_waiting == 0
    assert writer.stats.packs == 2 * uploads
    assert [vault.read_blob(blob_id) for blob_id in ids] == blobs


class IndexLog(LocalBackend):
    """A local folder that notes every index file written and deleted."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []
        self.deleted: list[str] = []

    def put(
        self, name: str, data: bytes | bytearray | memoryview, retain_until: datetime | None = None
    ) -> None:
        super().put(name, data, retain_until)
        if name.startswith("index/"):
            self.written.append(name)

    def delete(self, name: str) -> None:
        super().delete(name)
        if name.startswith("index/"):
            self.deleted.append(name)


def test_checkpoint_index_files_become_one_at_flush(tmp_path: Path) -> None:
    """A writer that indexes every pack leaves, once flushed, one index file
    naming every blob, and a vault opened afresh finds them all in it."""
    rng = random.Random(5)
    backend = IndexLog(tmp_path / "vault")
    vault = new_vault(backend, pack_size=256 * KiB)
    blobs = [rng.randbytes(200 * KiB) for _ in range(12)]

    with BlobWriter(vault, index_every=1) as writer:
        ids = [writer.add(data) for data in blobs]
        name = writer.flush()

    assert len(list(backend.list("packs"))) >= 6
    merged = f"index/{name}"
    assert len(backend.written) >= 7 and backend.written[-1] == merged
    assert sorted(backend.deleted) == sorted(backend.written[:-1])
    assert [n for n, _ in backend.list("index")] == [merged]
    reopened = Vault.open(backend, Secret.passphrase("x"))
    assert len(reopened.index) == len(blobs)
    for blob_id, data in zip(ids, blobs, strict=True):
        assert reopened.read_blob(blob_id) == data


class CountingBackend(LocalBackend):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ranges: list[tuple[str, int, int]] = []

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        self.ranges.append((name, offset, length))
        return super().get_range(name, offset, length)


def test_blobs_of_a_pack_are_read_in_runs_of_neighbours_and_damage_is_named(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    backend = CountingBackend(tmp_path / "vault")
    vault = new_vault(backend)
    # Raw 600 KiB blobs: one pack, in the order they were added.
    blobs = [rng.randbytes(600 * KiB) for _ in range(8)]
    with BlobWriter(vault) as writer:
        ids = [writer.add(b, compress=False) for b in blobs]
        writer.flush()
    (pack,) = {located(vault, i).pack for i in ids}
    assert {Compression(located(vault, i).flags) for i in ids} == {Compression.NONE}
    by_offset = sorted(ids, key=lambda i: located(vault, i).offset)

    # Neighbours (and a gap under 1 MiB) come in one request; a blob far away in another.
    wanted = [by_offset[5], by_offset[0], by_offset[1], by_offset[7]]
    backend.ranges.clear()
    got = {bid: plain for bid, plain, _ in vault.read_pack_blobs(pack, wanted)}

    assert got == {bid: blobs[ids.index(bid)] for bid in wanted}
    assert len(backend.ranges) == 2
    assert sum(length for _, _, length in backend.ranges) < 6 * 600 * KiB

    # One flipped byte fails authentication; a missing pack is named.
    victim = located(vault, by_offset[1])
    path = tmp_path / "vault" / "packs" / pack[:2] / pack
    data = bytearray(path.read_bytes())
    data[victim.offset + 100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DamageError, match="authentication"):
        list(vault.read_pack_blobs(pack, [by_offset[1]]))
    path.unlink()
    with pytest.raises(DamageError, match="missing"):
        list(vault.read_pack_blobs(pack, [by_offset[0]]))
