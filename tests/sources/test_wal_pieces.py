"""The small rules WAL handling rests on, without a database: which streamed
segments may be served, how a torn read is cut, how a segment's size is known,
that files made for the database's user never follow a planted link, and that
the restore helper stops a recovery whose feeder went away."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from reprieve.sources.pg_feeder import FETCH_SCRIPT
from reprieve.sources.pg_wal import _agreed
from reprieve.sources.postgres import write_new
from reprieve.vault.logs import LogListing, Piece, _segment_size, is_log_name, piece_name


def _listing(whole: list[str], pieces: dict[str, list[tuple[int, int]]]) -> LogListing:
    return LogListing(
        {name: 1 for name in whole},
        set(),
        {s: [Piece(a, b, piece_name(s, a, b)) for a, b in spans] for s, spans in pieces.items()},
        set(),
    )


def test_only_the_newest_segment_of_a_timeline_may_be_served_from_pieces() -> None:
    a, b, c, d = (f"0000000100000000000000{n:02X}" for n in (1, 2, 3, 4))
    listing = _listing([a, c], {b: [(0, 100)], d: [(0, 50), (50, 80), (90, 95)]})

    # b stopped in pieces while c arrived whole after it: b was cut short.
    assert listing.available() == [a, c, d]
    assert listing.partial_end(d) == 80  # contiguous from 0 only


def test_a_torn_read_ships_only_what_two_reads_agree_on() -> None:
    first = b"A" * 70_000 + b"\0" * 8192 + b"C" * 100
    second = b"A" * 70_000 + b"B" * 8192 + b"C" * 100

    assert _agreed(first, second) == 70_000
    assert _agreed(second, second) == len(second)


def test_segment_size_comes_from_the_long_page_header() -> None:
    header = bytearray(64)
    header[32:36] = (64 * 1024 * 1024).to_bytes(4, "little")
    assert _segment_size(bytes(header)) == 64 * 1024 * 1024
    assert _segment_size(b"\x01" * 64) == 16 * 1024 * 1024  # not a header: the default


def test_archived_partial_and_backup_label_names_are_wal_names() -> None:
    assert is_log_name("000000010000000000000007.partial")
    assert is_log_name("000000010000000000000007.00000028.backup")
    assert not is_log_name("../000000010000000000000007")


def test_write_new_replaces_a_planted_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("not yours")
    planted = tmp_path / "postgresql.auto.conf"
    planted.symlink_to(precious)

    write_new(planted, b"port = '5432'\n", None)

    assert precious.read_text() == "not yours"
    assert not planted.is_symlink() and planted.read_bytes() == b"port = '5432'\n"
    assert planted.stat().st_mode & 0o777 == 0o600


def test_restore_helper_stops_recovery_when_the_feeder_is_gone(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "requests").mkdir(parents=True)
    alive = inbox / "feeder.alive"
    alive.touch()
    os.utime(alive, (time.time() - 3600, time.time() - 3600))
    name = "000000010000000000000003"

    began = time.monotonic()
    done = subprocess.run(
        ["/bin/sh", str(FETCH_SCRIPT), name, str(tmp_path / "out"), str(inbox), "restore"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    # 126 makes PostgreSQL abort; exit 1 would read as "no more WAL" and end early.
    assert done.returncode == 126
    assert "stopped answering" in done.stderr
    assert time.monotonic() - began < 30
    assert not (inbox / "requests" / f"{name}.want").exists()


def test_restore_helper_moves_a_prefetched_file_and_reports_progress(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "requests").mkdir(parents=True)
    (inbox / "ready").mkdir()
    name = "000000010000000000000003"
    (inbox / "ready" / name).write_bytes(b"wal" * 1000)

    done = subprocess.run(
        ["/bin/sh", str(FETCH_SCRIPT), name, str(tmp_path / "RECOVERYXLOG"), str(inbox), "restore"],
        timeout=60,
    )

    assert done.returncode == 0
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == b"wal" * 1000
    assert not (inbox / "ready" / name).exists()  # moved, not copied
    assert (inbox / "requests" / f"{name}.got").exists()
