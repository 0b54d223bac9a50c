"""What a drill checks on a restored copy, and the evidence each check keeps.

* **content digests** (files): every restored file is read back from the
  sandbox and cut at the point's own blob boundaries; each piece's keyed
  hash must equal the blob id the manifest lists, and every file, folder
  and link the manifest names must be there. This checks the bytes on disk,
  not the restore's own bookkeeping.
* **SQLite integrity**: every restored file that starts with the SQLite
  header (and every ``sqlite:`` check) passes ``PRAGMA integrity_check``.
* **PostgreSQL**: the server accepts connections; ``amcheck`` verifies every
  B-tree index of every database where the extension is available; the
  resource's ``sql`` assertions hold.
* **command** and **http** checks declared in the policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprieve.children import start_group
from reprieve.drills.model import Check
from reprieve.errors import ReprieveError
from reprieve.policy.model import Verification
from reprieve.vault.repository import Vault
from reprieve.vault.tree import NodeType

SQLITE_HEADER = b"SQLite format 3\x00"
SHOWN_PROBLEMS = 10
OUTPUT_TAIL = 2000


@dataclass
class Sandboxed:
    """Where a resource was restored, as checks need it."""

    resource: str
    folder: Path
    port: int | None = None  # a running PostgreSQL cluster's
    host: str = ""  # its socket folder (only root and the cluster's user may enter)
    env: dict[str, str] = field(default_factory=dict)


# -- files ------------------------------------------------------------------------


@dataclass
class FilesWalk:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    blobs: int = 0
    problems: list[str] = field(default_factory=list)
    sqlite: list[Path] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)


def content_digests(
    vault: Vault, tree: bytes, folder: Path, resource: str
) -> tuple[Check, FilesWalk]:
    walk = FilesWalk()
    _walk_tree(vault, tree, folder, b"", walk)
    shown = walk.problems[:SHOWN_PROBLEMS]
    evidence = {
        "files": walk.files,
        "dirs": walk.dirs,
        "links": walk.links,
        "bytes": walk.bytes,
        "blobs": walk.blobs,
        "sha256_of_contents": walk.digest.hexdigest(),
        "mismatches": len(walk.problems),
        "first_mismatches": shown,
    }
    if walk.problems:
        detail = f"{len(walk.problems)} mismatch(es) against the manifest; first: {shown[0]}"
    else:
        detail = f"{walk.files} files, {walk.blobs} blobs ({walk.bytes} bytes) match the manifest"
    return Check("content digests", not walk.problems, detail, resource, evidence), walk


def _walk_tree(vault: Vault, tree: bytes, folder: Path, rel: bytes, walk: FilesWalk) -> None:
    for node in vault.read_tree(tree):
        child = os.path.join(rel, node.name) if rel else node.name
        path = os.path.join(os.fsencode(folder), child)
        shown = os.fsdecode(child)
        if node.type is NodeType.DIR:
            walk.dirs += 1
            if not os.path.isdir(path):
                walk.problems.append(f"{shown}: folder missing")
            elif node.subtree is not None:
                _walk_tree(vault, node.subtree, folder, child, walk)
        elif node.type is NodeType.SYMLINK:
            walk.links += 1
            try:
                if os.readlink(path) != (node.target or b""):
                    walk.problems.append(f"{shown}: link points elsewhere")
            except OSError:
                walk.problems.append(f"{shown}: link missing")
        elif node.type is NodeType.FILE:
            walk.files += 1
            _check_file(vault, node.content, node.size, node.hardlink, folder, path, shown, walk)


def _check_file(
    vault: Vault,
    blobs: list[bytes],
    size: int,
    hardlink: bytes | None,
    folder: Path,
    path: bytes,
    shown: str,
    walk: FilesWalk,
) -> None:
    try:
        if hardlink is not None:
            first = os.path.join(os.fsencode(folder), hardlink)
            if os.stat(path).st_ino != os.stat(first).st_ino:
                walk.problems.append(f"{shown}: not a hard link of {os.fsdecode(hardlink)}")
            return
        with open(path, "rb") as f:
            head = b""
            for blob_id in blobs:
                where = vault.index.get(blob_id)
                if where is None:
                    walk.problems.append(f"{shown}: blob {blob_id.hex()[:12]} not in the index")
                    return
                piece = f.read(where.raw_length)
                head = head or piece[: len(SQLITE_HEADER)]
                walk.blobs += 1
                walk.bytes += len(piece)
                walk.digest.update(piece)
                if vault.cipher.blob_id(piece) != blob_id:
                    offset = f.tell() - len(piece)
                    walk.problems.append(f"{shown}: bytes at offset {offset} differ")
                    return
            if f.read(1):
                walk.problems.append(f"{shown}: longer than the manifest says")
                return
        if os.path.getsize(path) != size:
            walk.problems.append(f"{shown}: {os.path.getsize(path)} bytes, manifest says {size}")
        if head == SQLITE_HEADER:
            walk.sqlite.append(Path(os.fsdecode(path)))
    except OSError as exc:
        walk.problems.append(f"{shown}: {exc.strerror}")


def sqlite_integrity(path: Path, folder: Path, resource: str) -> Check:
    shown = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'")
            count = int(tables.fetchone()[0])
    except sqlite3.Error as exc:
        return Check(f"sqlite integrity: {shown}", False, str(exc), resource, {"file": shown})
    passed = rows == ["ok"]
    detail = f"integrity_check ok, {count} tables" if passed else "; ".join(rows[:5])
    evidence = {"file": shown, "integrity_check": rows[:SHOWN_PROBLEMS], "tables": count}
    return Check(f"sqlite integrity: {shown}", passed, detail, resource, evidence)


# -- PostgreSQL ---------------------------------------------------------------------


def _connect(place: Sandboxed, database: str) -> Any:
    import psycopg

    return psycopg.connect(
        host=place.host,
        port=place.port,
        user="postgres",
        dbname=database,
        autocommit=True,
        connect_timeout=10,
    )


def server_accepts(place: Sandboxed) -> tuple[Check, list[str]]:
    """(the check, the databases that accept connections)."""
    import psycopg

    port, resource = place.port, place.resource
    try:
        with _connect(place, "postgres") as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])
            in_recovery = bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])
            names = [
                str(r[0])
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
                ).fetchall()
            ]
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("server accepts connections", False, first, resource, {"port": port}), []
    passed = not in_recovery
    detail = f"PostgreSQL {version} on port {port}, {len(names)} databases" + (
        "" if passed else ", but still in recovery"
    )
    evidence = {"port": port, "version": version, "databases": names, "in_recovery": in_recovery}
    return Check("server accepts connections", passed, detail, resource, evidence), names


AMCHECK_INDEXES = """
SELECT c.oid::regclass::text
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am a ON a.oid = c.relam
WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready
ORDER BY 1
"""


def amcheck(place: Sandboxed, databases: list[str]) -> Check:
    import psycopg

    resource = place.resource
    checked: dict[str, int] = {}
    try:
        for name in databases:
            with _connect(place, name) as conn:
                available = conn.execute(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'"
                ).fetchone()
                if available is None:
                    detail = "amcheck is not installed on this server; skipped"
                    return Check("amcheck", True, detail, resource, {"skipped": True})
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                indexes = [str(r[0]) for r in conn.execute(AMCHECK_INDEXES).fetchall()]
                for index in indexes:
                    conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
                checked[name] = len(indexes)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("amcheck", False, first, resource, {"indexes_checked": checked})
    total = sum(checked.values())
    detail = f"{total} B-tree indexes in {len(checked)} databases verified (heapallindexed)"
    return Check("amcheck", True, detail, resource, {"indexes_checked": checked})


def sql_assertion(place: Sandboxed, spec: Verification) -> Check:
    import psycopg

    assert spec.sql is not None
    resource = place.resource
    evidence: dict[str, Any] = {"database": spec.database, "sql": spec.sql, "expect": spec.expect}
    try:
        with _connect(place, spec.database) as conn:
            row = conn.execute(spec.sql).fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(spec.label, False, first, resource, evidence)
    got = None if row is None else row[0]
    evidence["got"] = None if got is None else str(got)
    passed = got is not None and _same(got, spec.expect)
    detail = f"got {got!r}, expected {spec.expect!r}"
    return Check(spec.label, passed, detail, resource, evidence)


def _same(got: Any, expect: Any) -> bool:
    if isinstance(expect, bool):
        return (
            bool(got) is expect
            if isinstance(got, bool)
            else str(got).lower() == str(expect).lower()
        )
    return str(got) == str(expect)


# -- commands and HTTP ---------------------------------------------------------------


def command_check(spec: Verification, place: Sandboxed) -> Check:
    assert spec.command is not None
    argv = spec.command if isinstance(spec.command, list) else ["/bin/sh", "-c", spec.command]
    env = {k: v for k, v in os.environ.items() if not _secret(k)}
    env.update(REPRIEVE_DRILL_TARGET=str(place.folder), **place.env)
    evidence: dict[str, Any] = {"command": argv}
    try:
        proc = start_group(  # its children go with it on a timeout or an interrupt
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(place.folder),
        )
    except OSError as exc:
        return Check(spec.label, False, f"cannot run: {exc.strerror}", place.resource, evidence)
    try:
        out, _ = proc.communicate(timeout=spec.timeout.total_seconds())
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        detail = f"still running after {spec.timeout.total_seconds():.0f} s"
        return Check(spec.label, False, detail, place.resource, evidence)
    except BaseException:
        _kill_group(proc)
        raise
    output = out.decode("utf-8", "replace")
    evidence.update(exit_code=proc.returncode, output=output[-OUTPUT_TAIL:])
    last = output.strip().splitlines()[-1] if output.strip() else ""
    detail = f"exit {proc.returncode}" + (f": {last[:200]}" if last else "")
    return Check(spec.label, proc.returncode == 0, detail, place.resource, evidence)


SECRET_NAMES = ("PASSWORD", "SECRET", "TOKEN", "KEY_FILE")


def _secret(name: str) -> bool:
    """Vault passwords and cloud credentials are not the check's business."""
    return any(part in name.upper() for part in SECRET_NAMES)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def http_check(spec: Verification, place: Sandboxed) -> Check:
    assert spec.http is not None
    if "{port}" in spec.http and place.port is None:
        detail = "{port} names a restored database's port; this resource has none"
        return Check(spec.label, False, detail, place.resource, {"url": spec.http})
    url = spec.http.replace("{port}", str(place.port))
    evidence: dict[str, Any] = {"url": url, "expect_status": spec.status}
    deadline = time.monotonic() + spec.timeout.total_seconds()
    problem = ""
    while True:
        status, body, problem = _get(url)
        if status is not None:
            evidence.update(status=status, body_bytes=len(body), body_head=body[:300])
            ok = status == spec.status and (
                spec.body_contains is None or spec.body_contains in body
            )
            if ok:
                return Check(
                    spec.label, True, f"HTTP {status} from {url}", place.resource, evidence
                )
            problem = f"HTTP {status}" + (
                ""
                if spec.body_contains is None or spec.body_contains in body
                else f", body lacks {spec.body_contains!r}"
            )
        if time.monotonic() >= deadline:
            return Check(spec.label, False, f"{problem} from {url}", place.resource, evidence)
        time.sleep(0.5)


def _get(url: str) -> tuple[int | None, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status), answer.read(1 << 20).decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(1 << 20).decode("utf-8", "replace"), ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, "", f"no answer ({reason})"


def declared(specs: list[Verification], place: Sandboxed) -> Iterator[Check]:
    """The resource's own checks, in the policy's order."""
    for spec in specs:
        try:
            if spec.sql is not None:
                yield sql_assertion(place, spec)
            elif spec.sqlite is not None:
                yield sqlite_integrity(place.folder / spec.sqlite, place.folder, place.resource)
            elif spec.command is not None:
                yield command_check(spec, place)
            else:
                yield http_check(spec, place)
        except ReprieveError as exc:
            yield Check(spec.label, False, str(exc), place.resource)
