"""PostgreSQL base backups: ``pg_basebackup`` streamed into the vault.

A base backup is ``pg_basebackup --format=tar --wal-method=none -D -``: the
server sends the data directory as one tar stream over a replication
connection, which goes straight through the vault's chunker, so two base
backups of a mostly unchanged database share most of their chunks. The
point's tree holds one file, ``base.tar``. The WAL that makes the copy
consistent is not in the tar: it comes from the resource's ``logs/`` area
(see vault/logs.py), filled by ``wal push`` or ``wal stream``.

While the stream passes, its tar headers are followed to pick up two
members: ``backup_label`` (start LSN, timeline, start time) and
``backup_manifest`` (the WAL range from start to end of the backup). These
go into the point's ``stats["postgres"]`` with the server's identity, and
are what restore and ``check`` reason with.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprieve.engine.progress import Progress
from reprieve.errors import DatabaseError, ReprieveError, UsageError
from reprieve.vault.immutability import lock_point_data
from reprieve.vault.locks import LockKind, VaultLock
from reprieve.vault.packs import BlobType
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault
from reprieve.vault.tree import Node, NodeType, encode_tree
from reprieve.vault.writer import BlobWriter

if TYPE_CHECKING:
    import psycopg

DEBIAN_BINARIES = Path("/usr/lib/postgresql")
TAR_NAME = b"base.tar"


# -- tools and users ---------------------------------------------------------


def pg_tool(name: str) -> str:
    """A PostgreSQL program: REPRIEVE_PG_BIN, else Debian's newest major, else PATH."""
    folder = os.environ.get("REPRIEVE_PG_BIN")
    candidates = [Path(folder) / name] if folder else []
    majors = sorted(
        DEBIAN_BINARIES.glob(f"*/bin/{name}"),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    candidates += reversed(majors)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise UsageError(
            f"{name} not found; install PostgreSQL's client programs or set REPRIEVE_PG_BIN"
        )
    return found


def run_as(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a program as ``user`` (the server refuses root)."""
    if user == "root" or owner_ids(user) is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def owner_ids(user: str | None) -> tuple[int, int] | None:
    """The uid and gid that what we make for ``user`` gets (None: leave it ours)."""
    if user is None or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"no OS user {user!r} to run PostgreSQL as; pass --os-user") from None
    return entry.pw_uid, entry.pw_gid


def default_os_user() -> str | None:
    """Who runs a restored cluster: ``postgres`` when we are root, else ourselves."""
    return "postgres" if os.geteuid() == 0 else None


def chown_to(path: Path, user: str | None) -> None:
    """Give a folder reprieve just made to ``user`` (refusing one that is a link)."""
    if user is not None and os.geteuid() == 0:
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link; give a real folder")
        shutil.chown(path, user, user)


def write_new(path: Path, data: bytes, user: str | None, mode: int = 0o600) -> None:
    """Create ``path`` afresh and hand it to ``user``.

    Run as root into folders the database's OS user can write, so never
    through what might be there already: whatever is at the name is removed
    (a link, not its target), and the file is made with O_EXCL|O_NOFOLLOW and
    changed through its descriptor.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        ids = owner_ids(user)
        if ids is not None:
            os.fchown(f.fileno(), *ids)
        os.fchmod(f.fileno(), mode)


# -- the server --------------------------------------------------------------


@dataclass
class ServerInfo:
    system_identifier: str
    version: int
    timeline: int
    wal_level: str
    segment_size: int


def connect(dsn: str) -> psycopg.Connection[Any]:
    import psycopg  # only database commands pay for the import

    try:
        return psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise DatabaseError(f"cannot reach PostgreSQL ({_where(dsn)}): {first}") from exc


def _where(dsn: str) -> str:
    import psycopg

    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the given --dsn"
    return f"host={params.get('host', 'local socket')} port={params.get('port', 5432)}"


def server_info(dsn: str, need_replication: bool = True) -> ServerInfo:
    """Who the server is, refusing settings that cannot give a restorable backup."""
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT system_identifier FROM pg_control_system()),"
            " current_setting('server_version_num')::int,"
            " (SELECT timeline_id FROM pg_control_checkpoint()),"
            " current_setting('wal_level'),"
            " current_setting('wal_segment_size'),"
            " (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user),"
            " current_user"
        ).fetchone()
    assert row is not None
    sysid, version, timeline, wal_level, seg, may_replicate, user = row
    if wal_level == "minimal":
        raise UsageError(
            "wal_level is 'minimal', which cannot restore to a point in time; "
            "set wal_level = replica and restart PostgreSQL"
        )
    if need_replication and not may_replicate:
        raise DatabaseError(
            f"role {user!r} lacks the REPLICATION permission; "
            f"run ALTER ROLE {user} REPLICATION (and allow it in pg_hba.conf)"
        )
    return ServerInfo(str(sysid), int(version), int(timeline), wal_level, _size(seg))


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kMG]?B)?", text.strip())
    if not m:
        return 16 * 1024 * 1024
    unit = {"kB": 1024, "MB": 1024**2, "GB": 1024**3}.get(m[2] or "", 1)
    return int(m[1]) * unit


def replication_error(stderr: str, dsn: str) -> ReprieveError:
    """One line for what a PostgreSQL client program said when it failed."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else "no output"
    joined = " ".join(lines)
    if "pg_hba.conf" in joined and "replication" in joined:
        return DatabaseError(
            f"PostgreSQL ({_where(dsn)}) refuses replication connections: "
            "add a 'replication' line to pg_hba.conf for this user"
        )
    if "superuser or replication role" in joined or "permission denied" in joined:
        return DatabaseError(f"missing replication permission: {text}")
    if "could not connect" in joined or "Connection refused" in joined:
        return DatabaseError(f"cannot reach PostgreSQL ({_where(dsn)}): {text}")
    return DatabaseError(f"PostgreSQL client failed: {text}")


# -- LSNs and WAL names ------------------------------------------------------


def parse_lsn(text: str) -> int:
    m = re.fullmatch(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})", text.strip())
    if not m:
        raise UsageError(f"{text!r} is not an LSN like 0/5000060")
    return (int(m[1], 16) << 32) | int(m[2], 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, seg_size: int) -> str:
    segno = lsn // seg_size
    per_id = 0x100000000 // seg_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def segment_number(name: str, seg_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a WAL segment name."""
    per_id = 0x100000000 // seg_size
    return int(name[:8], 16), int(name[8:16], 16) * per_id + int(name[16:24], 16)


# -- base backup -------------------------------------------------------------


class TarWatch:
    """Passes a tar stream through, keeping the bytes of a few named members."""

    def __init__(self, stream: Any, wanted: set[str], progress: Progress | None) -> None:
        self.stream = stream
        self.wanted = wanted
        self.found: dict[str, bytes] = {}
        self.progress = progress
        self.total = 0
        self._header = bytearray()
        self._skip = 0  # bytes of member data (with padding) still to pass
        self._keep: bytearray | None = None
        self._keep_name = ""
        self._keep_left = 0

    def readinto(self, buffer: memoryview) -> int:
        n: int = self.stream.readinto(buffer)
        if n:
            self._feed(buffer[:n])
            self.total += n
            if self.progress is not None:
                self.progress.advance(n)
        return n

    def _feed(self, data: memoryview) -> None:
        pos = 0
        while pos < len(data):
            if self._skip:
                take = min(self._skip, len(data) - pos)
                if self._keep is not None and self._keep_left:
                    part = min(take, self._keep_left)
                    self._keep += data[pos : pos + part]
                    self._keep_left -= part
                    if not self._keep_left:
                        self.found[self._keep_name] = bytes(self._keep)
                        self._keep = None
                self._skip -= take
                pos += take
                continue
            take = min(512 - len(self._header), len(data) - pos)
            self._header += data[pos : pos + take]
            pos += take
            if len(self._header) == 512:
                self._start_member(bytes(self._header))
                self._header.clear()

    def _start_member(self, header: bytes) -> None:
        if header == bytes(512):
            return
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
        size_field = header[124:136].split(b"\0", 1)[0].strip() or b"0"
        size = int(size_field, 8)
        self._skip = (size + 511) // 512 * 512
        if name in self.wanted and size:
            self._keep, self._keep_name, self._keep_left = bytearray(), name, size
        elif name in self.wanted:
            self.found[name] = b""


@dataclass
class BaseBackupResult:
    point: Point
    bytes: int
    bytes_added: int
    duration_s: float


def parse_label(label: str) -> dict[str, str]:
    out = {}
    for line in label.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def base_backup(
    vault: Vault,
    resource: str,
    dsn: str,
    tags: dict[str, str],
    progress: Progress | None = None,
    retain_until: datetime | None = None,
) -> BaseBackupResult:
    started = time.monotonic()
    info = server_info(dsn)
    begun = datetime.now(UTC)
    command = [
        pg_tool("pg_basebackup"),
        f"--dbname={dsn}",
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        f"--label=reprieve {resource}",
    ]
    with VaultLock(vault.backend, LockKind.SHARED, "backup"):
        previous = [p for p in vault.points(resource) if p.kind == "postgres"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()))  # type: ignore[union-attr]
        drain.start()
        watch = TarWatch(proc.stdout, {"backup_label", "backup_manifest"}, progress)
        try:
            with BlobWriter(vault, index_every=8) as writer:
                content = [writer.add(chunk) for chunk in writer.chunks(watch)]
                code = proc.wait()
                drain.join()
                if code != 0:
                    raise replication_error(b"".join(errors).decode("utf-8", "replace"), dsn)
                node = Node(
                    name=TAR_NAME,
                    type=NodeType.FILE,
                    mode=0o600,
                    uid=os.getuid(),
                    gid=os.getgid(),
                    mtime_ns=time.time_ns(),
                    ctime_ns=time.time_ns(),
                    size=watch.total,
                    content=content,
                )
                tree = writer.add(encode_tree([node]), BlobType.TREE)
                writer.flush()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join()
        meta = _backup_meta(watch.found, info, begun)
        point = Point(
            resource=resource,
            kind="postgres",
            time=datetime.now(UTC),
            tree=tree,
            tags=tags,
            host=socket.gethostname(),
            parent=previous[-1].id if previous else None,
            stats={
                "bytes": watch.total,
                "bytes_read": watch.total,
                "bytes_added": writer.stats.bytes_stored,
                "files": 1,
                "postgres": meta,
            },
            retain_until=retain_until,
        )
        lock_point_data(vault, point)
        vault.save_point(point)
    return BaseBackupResult(
        point, watch.total, writer.stats.bytes_stored, time.monotonic() - started
    )


def _backup_meta(found: dict[str, bytes], info: ServerInfo, begun: datetime) -> dict[str, Any]:
    if "backup_label" not in found:
        raise DatabaseError("pg_basebackup's stream had no backup_label; is this PostgreSQL 13+?")
    label = parse_label(found["backup_label"].decode())
    start_lsn = parse_lsn(label["START WAL LOCATION"].split()[0])
    timeline = int(label.get("START TIMELINE", info.timeline))
    stop_lsn = start_lsn
    if "backup_manifest" in found:
        manifest = json.loads(found["backup_manifest"])
        ranges = manifest.get("WAL-Ranges", [])
        if ranges:
            stop_lsn = max(parse_lsn(r["End-LSN"]) for r in ranges)
    seg = info.segment_size
    return {
        "system_identifier": info.system_identifier,
        "server_version": info.version,
        "timeline": timeline,
        "segment_size": seg,
        "start_lsn": format_lsn(start_lsn),
        "stop_lsn": format_lsn(stop_lsn),
        "start_wal": segment_name(timeline, start_lsn, seg),
        "stop_wal": segment_name(timeline, max(stop_lsn - 1, start_lsn), seg),
        "start_time": begun.isoformat(),
        "stop_time": datetime.now(UTC).isoformat(),
    }


def base_meta(point: Point) -> dict[str, Any]:
    """What a base backup recorded of its server and WAL range (see _backup_meta)."""
    meta: dict[str, Any] = point.stats.get("postgres", {})
    return meta


def base_points(vault: Vault, resource: str) -> list[Point]:
    """The resource's base backups, oldest first."""
    return [p for p in vault.points(resource) if p.kind == "postgres"]
