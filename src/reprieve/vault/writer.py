"""The hot path: chunk, hash, deduplicate, compress, encrypt, pack, store.

Threads, not processes: BLAKE3, zstd, AES-GCM, FastCDC and large reads all
release the GIL, so a small pool keeps every core busy. The caller's thread
(or a file-reader pool) chunks and hashes; a blob that is new is handed to
the store pool, which compresses, encrypts, appends to the open pack and,
when a pack is full, writes it. Memory stays bounded: at most
``max_inflight`` bytes of plaintext wait for the store pool, and one open
pack per blob type is buffered.

Nothing written here is reachable until :meth:`BlobWriter.flush` has written
the index file and the caller has saved a point.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import zstandard
from pyfastcdc import FastCDC

from reprieve.errors import RefusedError
from reprieve.vault.packs import BlobEntry, BlobType, Compression, PackBuilder, pack_path
from reprieve.vault.repository import Vault

# Compressed output must save at least this share to be kept; otherwise the
# blob is stored raw and restore skips decompression.
MIN_SAVING = 0.03
READ_BLOCK = 16 * 1024 * 1024
# Read blocks kept for reuse. A fresh block costs a clear of all its bytes
# and a page fault per 4 KiB; with all eight holding chunks not yet stored,
# a reader waits for the store pool (see BlobWriter._read_buffer).
READ_BLOCKS = 8
# Seconds a reader waiting for a free read block sleeps between looks.
BLOCK_RECHECK = 0.005
# Full packs waiting for (or in) upload, by default; bounds memory while
# fsync and network writes overlap with chunking and compression.
UPLOAD_QUEUE = 2
# Full packs' buffers kept for reuse beyond the uploads: enough for the open
# packs and those queued.
SPARE_BUFFERS = 4
INLINE_STORE = 128 * 1024
# A new data pack's buffer: the pack size and room for the blob that takes
# it past that size. A larger last blob grows the buffer; sizing every
# buffer for the largest possible blob costs a page fault per 4 KiB never used.
PACK_SLACK = 2 * 1024 * 1024
# Checkpoint index files deleted at once when a flush merges them.
DELETERS = 8
# Bytes of a large blob's head compressed to judge the whole: enough to tell
# random data, and (compressed again with the rest) a small waste on text.
PROBE = 16 * 1024


# A blob in the form another vault stored it (BlobWriter.add_stored):
# id, type (a BlobType's value), decrypted stored form, compression flags,
# raw length.
StoredBlob = tuple[bytes, int, bytes, int, int]


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _exported(block: bytearray) -> bool:
    """Whether a view of ``block`` (a chunk not yet stored) is still alive.

    Python refuses to resize a bytearray while views of it exist; cutting
    the last byte and putting it back stays within the allocation.
    """
    try:
        del block[-1:]
    except BufferError:
        return True
    block.append(0)
    return False


class ByteBudget:
    """A counting semaphore in bytes: bounds plaintext waiting in the pool."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                self._waiting += 1
                self._cond.wait()
                self._waiting -= 1
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            if self._waiting:
                self._cond.notify_all()


@dataclass
class WriteStats:
    blobs_new: int = 0
    bytes_new_raw: int = 0
    bytes_stored: int = 0
    packs: int = 0


class BlobWriter:
    def __init__(
        self,
        vault: Vault,
        workers: int | None = None,
        index_every: int = 0,
        uploads: int = UPLOAD_QUEUE,
    ) -> None:
        """``index_every`` > 0 writes an index file after that many packs, so
        that an interrupted run's uploads are found (and not repeated) by the
        next one; otherwise the index is written by :meth:`flush` only.
        ``uploads`` packs are stored at once."""
        self.vault = vault
        self.cipher = vault.cipher
        self.config = vault.config
        cores = os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(workers or cores, thread_name_prefix="store")
        self.uploads = ThreadPoolExecutor(uploads, thread_name_prefix="upload")
        self._upload_slots = threading.Semaphore(uploads)
        self._spare_limit = uploads + SPARE_BUFFERS
        self._index_every = index_every
        self._checkpoints: list[str] = []
        self._since_flush: dict[str, list[BlobEntry]] = {}
        self._index_lock = threading.Lock()
        self.budget = ByteBudget(max(32 << 20, 2 * self.config.chunk_max))
        self._lock = threading.Lock()
        # Signalled whenever a store settles (and may have freed a read block).
        self._stored = threading.Condition(self._lock)
        self._pending: set[bytes] = set()
        self._open: dict[int, PackBuilder] = {}
        self._spare: list[bytearray] = []
        # The unfinished chunk carried into the next read block (under
        # chunk_max) leaves at least half a block to read.
        self.block_size = max(READ_BLOCK, 2 * self.config.chunk_max)
        # Read blocks not in a reader's hands, and how many exist.
        self._blocks: list[bytearray] = []
        self._block_count = 0
        self._written: dict[str, list[BlobEntry]] = {}
        # Every task not yet settled; the blobs being compressed and sealed
        # are also in _stores.
        self._futures: set[Future[None]] = set()
        self._stores: set[Future[None]] = set()
        self._error: BaseException | None = None
        self._local = threading.local()
        self.stats = WriteStats()

    # -- chunking -----------------------------------------------------------

    def _chunker(self) -> FastCDC:
        cdc: FastCDC | None = getattr(self._local, "cdc", None)
        if cdc is None:
            cdc = self._local.cdc = FastCDC(
                self.config.chunk_avg,
                min_size=self.config.chunk_min,
                max_size=self.config.chunk_max,
                seed=self.cipher.chunker_seed,
            )
        return cdc

    def chunks(self, stream: Readable, size_hint: int | None = None) -> Iterator[memoryview]:
        """Content-defined chunks of a stream, as views into large read blocks.

        Blocks are read with ``readinto`` (no GIL, no extra copy) and cut in
        place; only the unfinished last chunk of a block is copied into the
        next one. A view keeps its block alive until the chunk is stored.
        """
        cdc = self._chunker()
        block = self.block_size
        # A file smaller than a block reads its size (plus one byte to see
        # the end).
        size = block if size_hint is None else max(64 * 1024, min(block, size_hint + 1))
        carry: memoryview | None = None
        while True:
            start = len(carry) if carry is not None else 0
            view = self._read_buffer(min(block, start + size))
            size = block
            if carry is not None:
                view[:start] = carry
            filled = start
            while filled < len(view):
                n = stream.readinto(view[filled:])
                if not n:
                    break
                filled += n
            eof = filled < len(view)
            last: memoryview | None = None
            for chunk in cdc.cut_buf(view[:filled]):
                if last is not None:
                    yield last
                last = chunk.data
            if eof:
                if last is not None:
                    yield last
                return
            carry = last

    def _read_buffer(self, size: int) -> memoryview:
        """``size`` bytes to read into, cut from this thread's read block.

        Files follow one another in a block, so many small files share one.
        A block starts again once every chunk cut from it is stored; a full
        one still in use goes back to the kept ones, for any reader to take
        once it is free. A new block is made while fewer than READ_BLOCKS
        exist. When every block holds chunks still being stored, the reader
        waits for the store pool to free one (it is the slower stage, and a
        new buffer costs a page fault per 4 KiB); with nothing being stored,
        a buffer of just ``size``.
        """
        local = self._local
        block: bytearray | None = getattr(local, "block", None)
        used: int = getattr(local, "used", 0)
        if block is not None and len(block) - used < size and not _exported(block):
            used = 0  # every chunk cut from it is stored: start it again
        if block is not None and len(block) - used >= size:
            local.used = used + size
            return memoryview(block)[used : used + size]
        with self._stored:
            if block is not None:
                self._blocks.append(block)
            local.block = None
            block = self._free_block()
            while block is None and self._stores:
                # A finished store lets go of its chunk a moment after its
                # future settles: look again soon even without a signal.
                self._stored.wait(BLOCK_RECHECK)
                block = self._free_block()
        if block is None:
            return memoryview(bytearray(size))
        local.block, local.used = block, size
        return memoryview(block)[:size]

    def _free_block(self) -> bytearray | None:
        """A kept block no chunk refers to any more, or a new one while fewer
        than READ_BLOCKS exist. The caller holds the lock."""
        for i, kept in enumerate(self._blocks):
            if not _exported(kept):
                return self._blocks.pop(i)
        if self._block_count < READ_BLOCKS:
            self._block_count += 1
            return bytearray(self.block_size)
        return None

    def chunk_buffer(self, data: bytes) -> Iterator[memoryview]:
        for chunk in self._chunker().cut_buf(data):
            yield chunk.data

    # -- saving -------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def add(
        self,
        data: bytes | memoryview,
        blob_type: BlobType = BlobType.DATA,
        packed: bytes | None = None,
        compress: bool = True,
    ) -> bytes:
        """Store a blob unless the vault already has it; returns its id.

        Hashing runs in the caller's thread. Small blobs are compressed and
        sealed there too (a hand-off costs more than the work); larger ones
        go to the store pool. ``packed``, when given, is ``data`` already
        zstd-compressed (by a copy's source vault) and is stored as it is;
        ``compress=False`` stores ``data`` raw without trying.
        """
        self._check()
        blob_id = self.cipher.blob_id(data)
        if self._claim(blob_id):
            self._hand_off(len(data), self._store, blob_id, blob_type, data, packed, compress)
        return blob_id

    def add_stored(self, blobs: Sequence[StoredBlob]) -> None:
        """Store blobs known by their ids, in the form another vault that
        shares this one's id key stored them (flags: compressed or raw),
        unless the vault already has them: a copy's fast path, with nothing
        to hash or compress. A run of them (from one source pack) is claimed
        and sealed into the open packs in one hold of the lock, in the
        caller's thread: handing blobs one by one to the store pool cost more
        than sealing them."""
        self._check()
        full: list[PackBuilder] = []
        with self._lock:
            for blob_id, blob_type, payload, flags, raw in blobs:
                if not self._claim_locked(blob_id):
                    continue
                if (pack := self._seal_locked(blob_id, blob_type, payload, flags, raw)) is not None:
                    full.append(pack)
        for pack in full:
            self._queue_pack(pack)

    def _claim(self, blob_id: bytes) -> bool:
        """Whether the blob is new to the vault and to this writer (now claimed)."""
        with self._lock:
            return self._claim_locked(blob_id)

    def _claim_locked(self, blob_id: bytes) -> bool:
        """:meth:`_claim` with the lock held."""
        if blob_id in self._pending or blob_id in self.vault.index:
            return False
        self._pending.add(blob_id)
        return True

    def _hand_off(self, size: int, store: Callable[..., None], *args: Any) -> None:
        """Run ``store`` here for a small blob; else in the pool, within the budget."""
        if size < INLINE_STORE:
            store(*args)
            return
        self.budget.acquire(size)
        future = self.pool.submit(store, *args)
        with self._lock:
            self._futures.add(future)
            self._stores.add(future)
        future.add_done_callback(self._done(size))

    def _done(self, size: int) -> Callable[[Future[None]], None]:
        def callback(future: Future[None]) -> None:
            self.budget.release(size)
            self._settle(future)

        return callback

    def _settle(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
            self._stores.discard(future)
            self._stored.notify_all()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=self.config.zstd_level)
        return cctx

    def _worth_compressing(self, data: bytes | memoryview) -> bool:
        """Probe the head of a large blob: random data is stored without a full try."""
        if len(data) <= 4 * PROBE:
            return True
        return len(self._compressor().compress(data[:PROBE])) < PROBE * (1 - MIN_SAVING)

    def _store(
        self,
        blob_id: bytes,
        blob_type: BlobType,
        data: bytes | memoryview,
        packed: bytes | None = None,
        compress: bool = True,
    ) -> None:
        if self._error is not None:
            return
        raw = len(data)
        flags = Compression.NONE
        payload: bytes | memoryview = data
        if packed is not None:
            payload, flags = packed, Compression.ZSTD
        elif compress and raw >= 64 and self._worth_compressing(data):
            packed = self._compressor().compress(data)
            if len(packed) < raw * (1 - MIN_SAVING):
                payload, flags = packed, Compression.ZSTD
        self._seal(blob_id, blob_type, payload, flags, raw)

    def _seal(
        self, blob_id: bytes, blob_type: BlobType, payload: bytes | memoryview, flags: int, raw: int
    ) -> None:
        """Encrypt a blob's stored form into the open pack of its type."""
        if self._error is not None:
            return
        with self._lock:
            full = self._seal_locked(blob_id, blob_type, payload, flags, raw)
        if full is not None:
            self._queue_pack(full)

    def _seal_locked(
        self, blob_id: bytes, blob_type: int, payload: bytes | memoryview, flags: int, raw: int
    ) -> PackBuilder | None:
        """:meth:`_seal` with the lock held; the pack it filled, to queue once
        the lock is released."""
        pack = self._open.get(blob_type)
        if pack is None:
            pack = self._open[blob_type] = PackBuilder(self._buffer(blob_type))
        # AES-GCM runs at several GB/s: sealing in place under the lock
        # costs less than a buffer of its own per blob.
        pack.seal(self.cipher, blob_id, blob_type, flags, payload, raw)
        self.stats.blobs_new += 1
        self.stats.bytes_new_raw += raw
        if pack.size >= self.config.pack_size:
            return self._open.pop(blob_type)
        return None

    def _queue_pack(self, pack: PackBuilder) -> None:
        self._upload_slots.acquire()
        future = self.uploads.submit(self._write_pack, pack)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._uploaded)

    def _uploaded(self, future: Future[None]) -> None:
        self._upload_slots.release()
        self._settle(future)

    def _buffer(self, blob_type: int) -> bytearray:
        """A full stored pack's buffer for the next pack, or a new one: a data
        pack's sized for a whole pack, a listings pack's (most are a few KiB)
        grown as needed. The caller holds the lock."""
        if self._spare:
            return self._spare.pop()
        if blob_type == BlobType.TREE:
            return bytearray()
        return bytearray(self.config.pack_size + PACK_SLACK)

    def _write_pack(self, pack: PackBuilder) -> None:
        if self._error is not None:
            return
        name, data = pack.finish(self.cipher)
        self.vault.backend.put(pack_path(name), data)
        with self._lock:
            self._written[name] = pack.entries
            self.stats.bytes_stored += len(data)
            self.stats.packs += 1
            if len(data) >= self.config.pack_size and len(self._spare) < self._spare_limit:
                self._spare.append(data)
            checkpoint = self._index_every and len(self._written) >= self._index_every
        if checkpoint:
            self._write_index()

    def _write_index(self) -> str | None:
        with self._index_lock:
            with self._lock:
                written, self._written = self._written, {}
            if not written:
                return None
            name = self.vault.write_index(written)
            # Readers use only get() and `in` on the index, which stay
            # consistent under the GIL while entries are added here.
            for pack_name, entries in written.items():
                self.vault.index.add_pack(pack_name, entries, name)
            with self._lock:
                self.stats.bytes_stored += self.vault.index_bytes_written
                self._checkpoints.append(name)
                self._since_flush.update(written)
            return name

    def _wait_all(self, tasks: set[Future[None]] | None = None) -> None:
        """Wait until ``tasks`` (every task when None) is empty."""
        while True:
            with self._lock:
                waiting = list(self._futures if tasks is None else tasks)
            if not waiting:
                return
            for future in waiting:
                if not future.cancelled():
                    future.exception()

    def flush(self) -> str | None:
        """Wait for every blob, write the open packs, then one index file.

        Returns the index file's name, or None when nothing new was written.
        After this, every blob added so far is in the vault's index.
        """
        # Once every blob is sealed, the open packs go out beside the full
        # ones still uploading, not after them.
        self._wait_all(self._stores)
        self._check()
        with self._lock:
            remaining = [p for p in self._open.values() if len(p)]
            self._open = {}
        for pack in remaining:
            self._queue_pack(pack)
        self._wait_all()
        self._check()
        name = self._write_index()
        with self._lock:
            self._pending.clear()
            checkpoints, self._checkpoints = self._checkpoints, []
            packs, self._since_flush = self._since_flush, {}
        if len(checkpoints) > 1:
            # Many checkpoint files become one, written before they go.
            name = self.vault.write_index(packs)
            # One request each, sent side by side (a long backup leaves dozens).
            with ThreadPoolExecutor(DELETERS, thread_name_prefix="delete") as deleters:
                for done in [deleters.submit(self._drop_checkpoint, old) for old in checkpoints]:
                    done.result()
            self.vault.index.merge_files(checkpoints, name)
        return name

    def _drop_checkpoint(self, name: str) -> None:
        # Another backup on a locked vault may have locked it: it stays.
        with contextlib.suppress(RefusedError):
            self.vault.backend.delete(f"index/{name}")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.uploads.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
