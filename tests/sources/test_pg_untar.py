"""Writing a base backup's tar out as files (O_DIRECT, descriptors held)."""

from __future__ import annotations

import errno
import io
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest

from reprieve.errors import DamageError
from reprieve.sources.pg_untar import BUFFER, Untar

SIZES = [0, 1, 511, 4095, 4096, 4097, BUFFER, BUFFER + 4097, 2 * BUFFER + 8192]


def _source(root: Path) -> Path:
    data = root / "src"
    (data / "base" / "5").mkdir(parents=True)
    (data / "pg_wal" / "archive_status").mkdir(parents=True)
    rng = random.Random(7)
    for i, size in enumerate(SIZES):
        (data / "base" / "5" / f"{1000 + i}").write_bytes(rng.randbytes(size))
    (data / "PG_VERSION").write_bytes(b"15\n")
    (data / "PG_VERSION").chmod(0o640)
    (data / "base").chmod(0o750)
    os.symlink("/somewhere/tablespace", data / "16400")
    return data


def _tar(data: Path) -> bytes:
    """The layout pg_basebackup sends: folders first, some names with ./"""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(data.rglob("*")):
            rel = path.relative_to(data).as_posix()
            tar.add(path, arcname=f"./{rel}" if rel.startswith("pg_wal") else rel, recursive=False)
    return out.getvalue()


def _feed(untar: Untar, blob: bytes, seed: int) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(blob):
        step = rng.randint(1, 300_000)
        untar.feed(blob[pos : pos + step])
        pos += step


def _tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    out: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = (0, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = (stat.S_IMODE(st.st_mode), b"")
        else:
            out[rel] = (stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_every_file_folder_and_link_comes_out_as_it_went_in(tmp_path: Path, direct: bool) -> None:
    data = _source(tmp_path)
    target = tmp_path / "restored"
    target.mkdir()
    untar = Untar(target, None, direct=direct)
    _feed(untar, _tar(data), seed=1)
    untar.close()
    assert untar.whole
    assert untar.files == len(SIZES) + 1
    assert _tree(target) == _tree(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
def test_as_root_everything_made_belongs_to_the_clusters_user(tmp_path: Path) -> None:
    data = _source(tmp_path)
    target = tmp_path / "restored"
    target.mkdir()
    untar = Untar(target, (65534, 65534))
    _feed(untar, _tar(data), seed=2)
    untar.close()
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in target.rglob("*")}
    assert owners == {(65534, 65534)}


def test_a_tar_cut_short_is_not_whole(tmp_path: Path) -> None:
    blob = _tar(_source(tmp_path))
    target = tmp_path / "restored"
    target.mkdir()
    untar = Untar(target, None)
    untar.feed(blob[: len(blob) // 2])
    untar.close()
    assert not untar.whole


def _member(name: str, data: bytes = b"x") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _fails(
    target: Path, blob: bytes, error: type[Exception], match: str | None = None
) -> tuple[Untar, Exception]:
    """Feed ``blob`` into ``target`` (made if need be), which must raise ``error``."""
    target.mkdir(exist_ok=True)
    untar = Untar(target, None)
    try:
        with pytest.raises(error, match=match) as caught:
            untar.feed(blob)
    finally:
        untar.close()
    return untar, caught.value


@pytest.mark.parametrize("name", ["../escape", "base/../../escape", "/etc/escape"])
def test_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    _fails(tmp_path / "restored", _member(name), DamageError, "refusing member name")
    assert not (tmp_path / "escape").exists()


def test_a_header_that_fails_its_checksum_is_damage(tmp_path: Path) -> None:
    blob = bytearray(_member("PG_VERSION"))
    blob[10] ^= 0x20
    _fails(tmp_path / "restored", bytes(blob), DamageError, "checksum")


def test_a_link_planted_in_the_target_is_not_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "restored"
    target.mkdir()
    os.symlink(elsewhere, target / "pg_wal")
    _fails(target, _member("pg_wal/000000010000000000000001", b"wal"), OSError)
    assert list(elsewhere.iterdir()) == []


def test_a_full_disk_is_an_os_error_naming_the_file_being_written(small_disk: Path) -> None:
    blob = _member("base/5/16384", random.Random(3).randbytes(5 << 20))
    untar, error = _fails(small_disk, blob, OSError)
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert untar.member == "base/5/16384"
