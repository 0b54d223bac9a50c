"""Seeded generators for file contents: log-like text and incompressible bytes.

Everything is derived from ``random.Random`` seeded with a string, so the same seed gives
the same bytes on every machine and Python build (string seeds are hashed with SHA-512,
independent of ``PYTHONHASHSEED``). numpy is not a dependency: the fast paths are
``Random.randbytes`` (about 480 MB/s) and joins of pre-built line fragments (about
90 MB/s for text).

Text is built from a pool of 65,536 line bodies per format, chosen at random per line and
prefixed with an increasing timestamp. zstd compresses it about 4x in 1 MiB pieces, close
to real service logs; because lines are chosen independently, two files never share a
long run of bytes, so deduplication finds nothing that was not put there on purpose.
"""

from __future__ import annotations

import array
import enum
import functools
import random
from typing import BinaryIO

BLOCK = 4 * 1024 * 1024
_POOL_LINES = 1 << 16
_LINES_PER_BATCH = 4096

_VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu request "
    "response timeout retry connected disconnected upload download commit rollback checkpoint "
    "vacuum replica primary standby tenant invoice payment refund customer order shipment "
    "warehouse ledger account session token cache miss hit evicted queued started finished"
)
_WORDS = _VOCABULARY.split()
_LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "INFO", "WARN", "ERROR")
_SERVICES = ("api", "worker", "scheduler", "billing", "auth", "ingest", "search", "mailer")
_PATHS = ("/v1/orders", "/v1/users", "/v1/invoices", "/healthz", "/v2/search", "/v1/tenants")
_STATUSES = (200, 200, 200, 200, 201, 204, 302, 404, 500)


class TextFormat(enum.Enum):
    JSONL = "jsonl"
    CSV = "csv"


def _json_body(rng: random.Random) -> bytes:
    msg = " ".join(rng.choices(_WORDS, k=rng.randint(3, 9)))
    return (
        f'"level":"{rng.choice(_LEVELS)}","svc":"{rng.choice(_SERVICES)}",'
        f'"path":"{rng.choice(_PATHS)}","status":{rng.choice(_STATUSES)},'
        f'"ms":{rng.randint(1, 5000)},"user":{rng.randint(1, 10**6)},"msg":"{msg}"}}\n'
    ).encode()


def _csv_body(rng: random.Random) -> bytes:
    words = " ".join(rng.choices(_WORDS, k=rng.randint(2, 6)))
    return (
        f"{rng.choice(_SERVICES)},{rng.choice(_LEVELS)},{rng.randint(1, 10**7)},"
        f"{rng.randint(0, 10**6) / 100:.2f},{rng.choice(_STATUSES)},{words}\n"
    ).encode()


@functools.cache
def _pool(seed: str, fmt: TextFormat) -> tuple[bytes, ...]:
    rng = random.Random(f"{seed}/pool/{fmt.value}")
    body = _json_body if fmt is TextFormat.JSONL else _csv_body
    return tuple(body(rng) for _ in range(_POOL_LINES))


class TextStream:
    """Produces log-like text of one format, continuing its timestamps across calls."""

    def __init__(self, pool_seed: str, fmt: TextFormat, rng: random.Random) -> None:
        self._pool = _pool(pool_seed, fmt)
        self._prefix = b'{"ts":%d,' if fmt is TextFormat.JSONL else b"%d,"
        self._rng = rng
        self._ts = rng.randint(1_600_000_000_000, 1_700_000_000_000)

    def _batch(self, lines_wanted: int) -> list[bytes]:
        picks = array.array("H")
        picks.frombytes(self._rng.randbytes(4 * lines_wanted))
        pool, prefix, ts = self._pool, self._prefix, self._ts
        lines = []
        for i in range(0, len(picks), 2):
            ts += picks[i] & 0x3FF
            lines.append(prefix % ts + pool[picks[i + 1]])
        self._ts = ts
        return lines

    def take(self, size: int) -> bytes:
        """Exactly ``size`` bytes of text; the last byte is a newline when size > 0."""
        parts: list[bytes] = []
        have = 0
        while have < size:
            # Lines are 50-200 bytes; small requests must not pay for a full batch.
            batch = self._batch(min(_LINES_PER_BATCH, (size - have) // 48 + 1))
            parts.extend(batch)
            have += sum(map(len, batch))
        data = b"".join(parts)[:size]
        return data[:-1] + b"\n" if data else data


def write_random(out: BinaryIO, rng: random.Random, size: int) -> None:
    left = size
    while left > 0:
        n = min(BLOCK, left)
        out.write(rng.randbytes(n))
        left -= n


def write_text(out: BinaryIO, stream: TextStream, size: int) -> None:
    left = size
    while left > 0:
        n = min(BLOCK, left)
        out.write(stream.take(n))
        left -= n
