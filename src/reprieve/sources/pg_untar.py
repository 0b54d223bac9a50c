"""Writing a base backup's tar out as files, around the page cache.

``tar -x`` writes through the page cache: a 3 GiB base is 3 GiB of fresh
memory to fill (on a VM, memory never touched before costs several times the
copy) and 3 GiB of dirty pages that the server's start-up fsync of the data
folder then waits for. Files written with ``O_DIRECT`` go from our buffer to
the disk: half the system time, nothing left to flush.

The tar is ``pg_basebackup``'s: ustar headers for regular files, folders and
(tablespace) links. Every name is created afresh, relative to folders this
extraction made and holds open (``O_EXCL``, ``O_NOFOLLOW``): when we run as
root into a folder the database's OS user can write, nothing that user plants
can redirect a write. Owner and mode are set through each descriptor.

A filesystem that refuses ``O_DIRECT`` (tmpfs on older kernels, some FUSE
mounts) gets buffered writes instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from pathlib import Path

from reprieve.errors import DamageError

BLOCK = 512
ALIGN = 4096  # O_DIRECT offsets, lengths and buffers: a page covers every disk
BUFFER = 4 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REGULAR = (b"0", b"\0", b"7")
_FOLDER_TYPE = b"5"
_LINK = b"2"


def _octal(field: bytes) -> int:
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise DamageError(f"base backup tar: bad number field {field!r}") from None


def _checked_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    text = name.decode("utf-8", "surrogateescape")
    parts = [p for p in text.split("/") if p not in ("", ".")]  # "./pg_wal" is pg_wal
    if not parts or text.startswith("/") or ".." in parts:
        raise DamageError(f"base backup tar: refusing member name {text!r}")
    return "/".join(parts)


def _drop_direct(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)


class Untar:
    """Feed it the tar's bytes in any pieces, then ``close``; ``whole`` says the
    archive ended where a member did."""

    def __init__(self, target: Path, owner: tuple[int, int] | None, direct: bool = True) -> None:
        self.owner = owner
        self.direct = direct
        self.files = 0
        self.member = ""  # the name being written: what an error is about
        self._folders: dict[str, int] = {"": os.open(target, _FOLDER)}
        self._buffer = mmap.mmap(-1, BUFFER)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._header = bytearray()
        self._fd = -1  # the regular file being written
        self._left = 0  # its bytes still to come
        self._pad = 0  # padding after it, to skip
        self._ended = False

    # -- the stream ----------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._left:
                take = min(self._left, len(view) - pos, BUFFER - self._filled)
                self._view[self._filled : self._filled + take] = view[pos : pos + take]
                self._filled += take
                self._left -= take
                pos += take
                if self._filled == BUFFER:
                    self._write(BUFFER)
                if not self._left:
                    self._end_file()
            elif self._pad:
                take = min(self._pad, len(view) - pos)
                self._pad -= take
                pos += take
            elif self._ended:
                return  # the zero blocks that close an archive, and what follows
            else:
                take = min(BLOCK - len(self._header), len(view) - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) == BLOCK:
                    header = bytes(self._header)
                    self._header.clear()
                    self._member(header)

    @property
    def whole(self) -> bool:
        return self._ended and self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in self._folders.values():
            os.close(fd)
        self._folders.clear()
        self._view.release()
        self._buffer.close()

    # -- members -------------------------------------------------------------

    def _member(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self._ended = True
            return
        if _octal(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
            raise DamageError("base backup tar: a header fails its checksum")
        name = self.member = _checked_name(header)
        kind = header[156:157]
        size = _octal(header[124:136])
        mode = _octal(header[100:108]) & 0o777  # no set-id bits from an archive
        parent, _, leaf = name.rpartition("/")
        if kind == _FOLDER_TYPE:
            self._folder(name, mode)
        elif kind == _LINK:
            link = header[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            where = self._parent(parent)
            os.symlink(link, leaf, dir_fd=where)
            if self.owner is not None:
                os.chown(leaf, *self.owner, dir_fd=where, follow_symlinks=False)
        elif kind in _REGULAR:
            self._start_file(self._parent(parent), leaf, mode, size)
            return
        else:
            raise DamageError(f"base backup tar: member {name!r} has unsupported type {kind!r}")
        self._pad = (size + BLOCK - 1) // BLOCK * BLOCK

    def _parent(self, name: str) -> int:
        """The folder ``name`` (made as tar would if the archive did not list it)."""
        fd = self._folders.get(name)
        return fd if fd is not None else self._folder(name, 0o700)

    def _folder(self, name: str, mode: int) -> int:
        parent, _, leaf = name.rpartition("/")
        where = self._parent(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf, 0o700, dir_fd=where)
        fd = os.open(leaf, _FOLDER, dir_fd=where)
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        os.fchmod(fd, mode or 0o700)
        old = self._folders.pop(name, None)
        if old is not None:
            os.close(old)
        self._folders[name] = fd
        return fd

    def _start_file(self, where: int, leaf: str, mode: int, size: int) -> None:
        flags = _CREATE | (os.O_DIRECT if self.direct else 0)
        try:
            fd = os.open(leaf, flags, 0o600, dir_fd=where)
        except OSError as e:
            if e.errno != errno.EINVAL or not self.direct:
                raise
            self.direct = False
            fd = os.open(leaf, _CREATE, 0o600, dir_fd=where)
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        os.fchmod(fd, mode or 0o600)
        self._fd, self._left, self._filled = fd, size, 0
        self._pad = (BLOCK - size % BLOCK) % BLOCK
        self.files += 1
        if not size:
            self._end_file()

    def _write(self, length: int) -> None:
        done = 0
        while done < length:
            # Each slice is released as it is left, an error included: a slice
            # kept alive by a traceback would stop close() from unmapping.
            with self._view[done:length] as part:
                try:
                    done += os.write(self._fd, part)
                except OSError as e:  # a filesystem that took the flag but not the write
                    if e.errno != errno.EINVAL or not self.direct:
                        raise
                    self._buffered()
        self._filled = 0

    def _buffered(self) -> None:
        """From now on, buffered writes: this file's and every later one's."""
        self.direct = False
        _drop_direct(self._fd)

    def _end_file(self) -> None:
        aligned = self._filled - self._filled % ALIGN
        tail = self._filled - aligned
        if aligned:
            self._write(aligned)
        if tail:
            if self.direct:  # the last partial page cannot go direct
                _drop_direct(self._fd)
            self._view[:tail] = self._view[aligned : aligned + tail]
            self._write(tail)
        os.close(self._fd)
        self._fd = -1
