"""Packs and index files: what is written reads back the same, and any damage is detected.

The oracle is the list of blobs the test put in: a pack must give back exactly those bytes,
types, and lengths, and every single-byte change must surface as a DamageError, never as
different data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from reprieve.errors import DamageError
from reprieve.vault.backends.local import LocalBackend
from reprieve.vault.check import check_vault, index_stored_packs
from reprieve.vault.crypto import Cipher, MasterKey, blob_aad, content_name
from reprieve.vault.index import INDEX_AAD, Location, decode_index, encode_index
from reprieve.vault.keys import Secret
from reprieve.vault.packs import (
    TRAILER,
    BlobEntry,
    BlobType,
    Compression,
    PackBuilder,
    pack_path,
    parse_header,
)
from reprieve.vault.points import POINT_AAD
from reprieve.vault.repository import Vault


@dataclass(frozen=True)
class Blob:
    type: BlobType
    data: bytes


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Vault:
    location = tmp_path_factory.mktemp("packs") / "vault"
    return Vault.create(LocalBackend(location), Secret.passphrase("x"), kdf_memory_kib=8192)


compressible = st.builds(
    lambda word, n: word * n, st.binary(min_size=1, max_size=16), st.integers(1, 400)
)
blobs_st = st.lists(
    st.builds(
        Blob,
        st.sampled_from(BlobType),
        st.one_of(st.binary(max_size=3000), compressible),
    ),
    max_size=12,
)


def build_pack(vault: Vault, blobs: list[Blob]) -> tuple[str, bytes, list[BlobEntry]]:
    """A pack as the writer makes one: zstd only when it saves, sealed under the blob's AAD."""
    builder = PackBuilder()
    cctx = zstandard.ZstdCompressor(level=3)
    for blob in blobs:
        blob_id = vault.cipher.blob_id(blob.data)
        packed = cctx.compress(blob.data)
        flags, payload = Compression.NONE, blob.data
        if len(packed) < len(blob.data):
            flags, payload = Compression.ZSTD, packed
        envelope = vault.cipher.seal(payload, blob_aad(blob_id, blob.type, flags))
        builder.add(blob_id, blob.type, flags, envelope, len(blob.data))
    name, data = builder.finish(vault.cipher)
    return name, bytes(data), builder.entries


def decode(vault: Vault, data: bytes, entry: BlobEntry) -> bytes:
    piece = data[entry.offset : entry.offset + entry.length]
    return vault.decode_blob(entry.id, entry.type, entry.flags, entry.raw_length, piece)


@settings(max_examples=150, deadline=None)
@given(blobs=blobs_st)
def test_pack_reads_back_every_blob_it_was_given(vault: Vault, blobs: list[Blob]) -> None:
    name, data, entries = build_pack(vault, blobs)

    assert content_name(data) == name
    parsed = parse_header(vault.cipher, name, data, len(data))
    assert parsed == entries
    assert [(e.type, e.raw_length) for e in parsed] == [(b.type, len(b.data)) for b in blobs]
    assert [decode(vault, data, e) for e in parsed] == [b.data for b in blobs]
    if any(len(b.data) > 200 and len(set(b.data)) == 1 for b in blobs):
        assert Compression.ZSTD in {e.flags for e in parsed}
    # Readers fetch only the pack's end; the header must parse from a tail as well.
    header_len = TRAILER.unpack_from(data, len(data) - TRAILER.size)[0]
    tail = data[len(data) - TRAILER.size - header_len :]
    assert parse_header(vault.cipher, name, tail, len(data)) == entries


@settings(max_examples=300, deadline=None)
@given(
    blobs=blobs_st.filter(bool), where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255)
)
def test_any_flipped_byte_in_a_pack_is_detected(
    vault: Vault, blobs: list[Blob], where: float, mask: int
) -> None:
    name, data, entries = build_pack(vault, blobs)
    position = int(where * len(data))
    damaged = bytearray(data)
    damaged[position] ^= mask
    damaged_bytes = bytes(damaged)

    assert content_name(damaged_bytes) != name
    hit = next((e for e in entries if e.offset <= position < e.offset + e.length), None)
    if hit is None:
        # Header or trailer: the pack's table of contents is refused as a whole.
        with pytest.raises(DamageError):
            parse_header(vault.cipher, name, damaged_bytes, len(damaged_bytes))
        return
    # A blob: the header still reads, that blob is refused, and its neighbours are intact.
    assert parse_header(vault.cipher, name, damaged_bytes, len(damaged_bytes)) == entries
    for entry, blob in zip(entries, blobs, strict=True):
        if entry is hit:
            with pytest.raises(DamageError):
                decode(vault, damaged_bytes, entry)
        else:
            assert decode(vault, damaged_bytes, entry) == blob.data


@settings(max_examples=100, deadline=None)
@given(blobs=blobs_st.filter(lambda b: len({x.data for x in b}) >= 2))
def test_a_blob_envelope_opens_only_as_the_blob_it_was_sealed_for(
    vault: Vault, blobs: list[Blob]
) -> None:
    _, data, entries = build_pack(vault, blobs)
    first = entries[0]
    other = next(e for e in entries if e.id != first.id)
    piece = data[first.offset : first.offset + first.length]

    with pytest.raises(DamageError):
        vault.decode_blob(other.id, first.type, first.flags, first.raw_length, piece)
    with pytest.raises(DamageError):
        vault.decode_blob(first.id, 1 - first.type, first.flags, first.raw_length, piece)


def test_blob_whose_content_does_not_hash_to_its_id_is_refused(vault: Vault) -> None:
    # Authentic under the vault key but mislabelled, as a buggy writer would store it.
    claimed = vault.cipher.blob_id(b"what the tree expects")
    envelope = vault.cipher.seal(b"something else", blob_aad(claimed, BlobType.DATA, 0))

    with pytest.raises(DamageError):
        vault.decode_blob(claimed, BlobType.DATA, 0, len(b"something else"), envelope)


def test_truncated_pack_is_refused(vault: Vault) -> None:
    name, data, _ = build_pack(vault, [Blob(BlobType.DATA, b"payload" * 100)] * 3)
    for cut in (0, 3, TRAILER.size, len(data) // 2, len(data) - 1):
        with pytest.raises(DamageError):
            parse_header(vault.cipher, name, data[:cut], cut)
    # Losing the front keeps header and trailer intact; only the size gives it away.
    for lost in (1, 40):
        with pytest.raises(DamageError):
            parse_header(vault.cipher, name, data[lost:], len(data) - lost)


def test_check_verifies_a_pack_whose_header_is_longer_than_its_first_read(vault: Vault) -> None:
    # 30,000 tiny blobs give a 1.2 MiB header; check's first read of a pack's end is 1 MiB.
    blobs = [Blob(BlobType.DATA, i.to_bytes(4, "big")) for i in range(30_000)]
    name, data, entries = build_pack(vault, blobs)
    assert TRAILER.unpack_from(data, len(data) - TRAILER.size)[0] > 1 << 20
    vault.backend.put(pack_path(name), data)
    vault.write_index({name: entries})

    report = check_vault(vault, read_data=False)

    assert report.ok, report.errors
    assert report.packs >= 1


def test_stored_packs_no_index_names_are_indexed_from_their_headers(tmp_path: Path) -> None:
    vault = Vault.create(LocalBackend(tmp_path / "v"), Secret.passphrase("x"), kdf_memory_kib=8192)
    first = [Blob(BlobType.DATA, b"first %d" % i * 50) for i in range(5)]
    second = [Blob(BlobType.TREE, b"second")]
    stray: dict[str, int] = {}
    for blobs in (first, second):
        name, data, _ = build_pack(vault, blobs)
        vault.backend.put(pack_path(name), data)
        stray[name] = len(data)
    # A pack whose header does not authenticate (a vault's garbage) is left alone.
    garbage = bytes(range(256)) * 4
    vault.backend.put(pack_path(content_name(garbage)), garbage)
    stray[content_name(garbage)] = len(garbage)
    stray["0" * 64] = 4096  # listed, then gone

    assert index_stored_packs(vault, stray) == 2

    assert [vault.read_blob(vault.cipher.blob_id(b.data)) for b in first + second] == [
        b.data for b in first + second
    ]
    reopened = Vault.open(vault.backend, Secret.passphrase("x"))
    assert reopened.index.pack_names() == set(stray) - {content_name(garbage), "0" * 64}
    assert index_stored_packs(vault, {}) == 0


def pack_names() -> st.SearchStrategy[str]:
    return st.binary(min_size=32, max_size=32).map(bytes.hex)


def entries_st() -> st.SearchStrategy[list[BlobEntry]]:
    u32 = st.integers(0, 2**32 - 1)
    return st.lists(
        st.builds(
            BlobEntry,
            st.binary(min_size=32, max_size=32),
            st.integers(0, 255),
            st.integers(0, 255),
            u32,
            u32,
            u32,
        ),
        max_size=20,
    )


index_st = st.dictionaries(pack_names(), entries_st(), max_size=8)


@settings(max_examples=100, deadline=None)
@given(packs=index_st)
def test_index_file_round_trips(vault: Vault, packs: dict[str, list[BlobEntry]]) -> None:
    name, data = encode_index(vault.cipher, packs)

    assert content_name(data) == name
    # Each blob's location, by pack (a blob listed twice: its last row).
    assert decode_index(vault.cipher, name, data) == {
        pack: {
            e.id: Location(pack, e.type, e.flags, e.offset, e.length, e.raw_length) for e in rows
        }
        for pack, rows in packs.items()
    }


@settings(max_examples=150, deadline=None)
@given(packs=index_st, where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_tampered_index_file_is_refused_even_when_renamed_to_match(
    vault: Vault, packs: dict[str, list[BlobEntry]], where: float, mask: int
) -> None:
    name, data = encode_index(vault.cipher, packs)
    damaged = bytearray(data)
    damaged[int(where * len(data))] ^= mask
    tampered = bytes(damaged)

    with pytest.raises(DamageError):
        decode_index(vault.cipher, name, tampered)
    # An intact file under another file's name is refused too: names are content hashes.
    with pytest.raises(DamageError):
        decode_index(vault.cipher, content_name(tampered), data)
    # Someone able to write the vault can also rename; the key still refuses the content.
    with pytest.raises(DamageError):
        decode_index(vault.cipher, content_name(tampered), tampered)


@settings(max_examples=50, deadline=None)
@given(packs=index_st)
def test_index_file_does_not_open_with_another_vaults_key(
    vault: Vault, packs: dict[str, list[BlobEntry]]
) -> None:
    name, data = encode_index(vault.cipher, packs)
    stranger = Cipher(MasterKey.generate())

    with pytest.raises(DamageError):
        decode_index(stranger, name, data)


def test_envelope_sealed_for_another_role_is_not_an_index(vault: Vault) -> None:
    name, data = encode_index(vault.cipher, {})
    plain = vault.cipher.open(data, INDEX_AAD, "index")
    as_point = vault.cipher.seal(plain, POINT_AAD)

    with pytest.raises(DamageError):
        decode_index(vault.cipher, content_name(as_point), as_point)
    assert decode_index(vault.cipher, name, data) == {}


def test_a_pack_buffer_passed_on_holds_only_the_next_pack(vault: Vault) -> None:
    rng = random.Random(5)

    def fill(builder: PackBuilder, sizes: list[int]) -> list[bytes]:
        blobs = [rng.randbytes(size) for size in sizes]
        for data in blobs:
            blob_id = vault.cipher.blob_id(data)
            builder.seal(vault.cipher, blob_id, BlobType.DATA, Compression.NONE, data, len(data))
        return blobs

    # The first pack outgrows its 64-byte buffer; the second is shorter than the
    # first and reuses what the first left behind.
    first = PackBuilder(bytearray(64))
    first_blobs = fill(first, [3000, 10, 5000])
    first_name, buffer = first.finish(vault.cipher)
    first_bytes = bytes(buffer)
    second = PackBuilder(buffer)
    second_blobs = fill(second, [100, 20])
    name, data = second.finish(vault.cipher)

    for pack_name, pack, blobs in (
        (first_name, first_bytes, first_blobs),
        (name, bytes(data), second_blobs),
    ):
        assert content_name(pack) == pack_name
        entries = parse_header(vault.cipher, pack_name, pack, len(pack))
        assert [decode(vault, pack, e) for e in entries] == blobs
    assert len(data) < len(first_bytes)
