"""Where a runbook's `dns` step points a name: a zone file, a hosts file, or Route 53.

Each provider answers two questions behind :class:`DnsProvider`: what the
record holds now (``current``), and make it hold this (``set``). The step
reads ``current`` first, so the plan can show old → new and the run can keep
the value it replaced as evidence, which is what a failback needs to put it
back.

Files are rewritten whole and atomically: a temporary file beside the
original (same mode and, where allowed, owner), fsync, rename over the
original, fsync of the folder. A reader (``named``, the resolver) sees the
old file or the new one, never half of either. Two steps of one run that
edit the same file (a parallel group) take turns.

Zone files are BIND master files. Names may be relative (to ``$ORIGIN``, or
to the step's ``zone``), ``@``, or inherited from the line above (a line that
starts with blank space). ``set`` replaces the record's line in place,
keeping how its owner was written, removes further records of the same name
and type, or appends an absolute ``name. TTL IN TYPE value`` line; then it
raises the SOA serial (to today's ``YYYYMMDD00`` when the serial is a date
and that is larger, else by one), so secondaries take the change. A CNAME
cannot share its name with other data, so such a change is refused rather
than half made. ``$INCLUDE`` files are not followed. Reloading the server
(``rndc reload``) is the runbook's next step, not this module's.

Hosts files (``/etc/hosts`` format) hold ``address name [alias…]`` lines;
``set`` takes the name off every line of the same address family and puts
one ``value name`` line where it first was (or at the end).

Route 53 uses ``list_resource_record_sets`` for the current value and an
``UPSERT`` through ``change_resource_record_sets``, then waits until the
change is in sync on Route 53's servers. Only simple records are changed: a
name with weighted, latency or failover routing is refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from reprieve.errors import ReprieveError
from reprieve.runbooks.model import DnsProviderKind, DnsSpec, RecordType, host_name


class DnsError(ReprieveError):
    """A DNS change that could not be read or made (exit 1)."""

    template = "{detail}"


class DnsProvider(Protocol):
    where: str  # "zone file /etc/bind/db.example.com": for plans and evidence

    def current(self, record: str, rtype: str) -> str | None: ...

    def set(self, record: str, rtype: str, value: str, ttl: int) -> None: ...


def provider_for(spec: DnsSpec, wait_s: float | None = None) -> DnsProvider:
    if spec.provider is DnsProviderKind.ZONE_FILE:
        assert spec.zone_file is not None
        return ZoneFile(Path(spec.zone_file), spec.zone)
    if spec.provider is DnsProviderKind.HOSTS_FILE:
        assert spec.hosts_file is not None
        return HostsFile(Path(spec.hosts_file))
    assert spec.hosted_zone_id is not None
    return Route53(spec.hosted_zone_id, wait_s)


def normal_value(rtype: str, value: str) -> str:
    """A value in one spelling, so that old and new compare: addresses and bare names."""
    try:
        if rtype in (RecordType.A, RecordType.AAAA):
            return str(ipaddress.ip_address(value))
        return host_name(value)
    except ValueError:
        return value


# -- writing files -------------------------------------------------------------------

_file_locks: dict[Path, threading.Lock] = {}
_file_locks_lock = threading.Lock()


@contextlib.contextmanager
def _turn(path: Path) -> Iterator[None]:
    with _file_locks_lock:
        lock = _file_locks.setdefault(path, threading.Lock())
    with lock:
        yield


def replace_file(path: Path, text: str) -> None:
    """Put ``text`` at ``path`` atomically, keeping the file's mode and owner."""
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o644, None
    tmp = path.with_name(f".{path.name}.reprieve-tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if owner is not None:
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), *owner)
            os.fchmod(f.fileno(), mode)  # the umask narrowed it at creation
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DnsError(f"cannot rewrite {path}: {exc.strerror or exc}") from exc


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DnsError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DnsError(f"cannot read {what} {path}: {exc}") from exc


# -- zone files ----------------------------------------------------------------------

CLASSES = {"IN", "CH", "HS", "CS"}
_TTL = re.compile(r"^\d+[smhdwSMHDW]?(?:\d+[smhdwSMHDW])*$")


@dataclass(frozen=True)
class Token:
    text: str
    line: int
    start: int
    end: int


def _tokens(line: str, index: int) -> tuple[list[Token], int]:
    """The line's tokens (quotes kept, comments dropped) and its change in ``(`` depth."""
    found: list[Token] = []
    depth, i, n = 0, 0, len(line)
    while i < n:
        ch = line[i]
        if ch == ";":
            break
        if ch in " \t\r\n":
            i += 1
        elif ch in "()":
            depth += 1 if ch == "(" else -1
            i += 1
        else:
            start = i
            quoted = ch == '"'
            i += 1
            while i < n:
                ch = line[i]
                if ch == "\\":
                    i += 2
                    continue
                if quoted:
                    i += 1
                    if ch == '"':
                        break
                elif ch in " \t\r\n;()":
                    break
                else:
                    i += 1
            found.append(Token(line[start:i], index, start, i))
    return found, depth


@dataclass(frozen=True)
class ZoneRecord:
    first: int  # line index of its first line
    last: int  # and of its last (a record in parentheses spans lines)
    owner: str  # absolute, lower case, no trailing dot
    owner_text: str | None  # as written; None when inherited from the record above
    rtype: str
    rdata: list[Token]


def _absolute(name: str, origin: str | None, path: Path) -> str:
    if name == "@":
        if origin is None:
            raise DnsError(f"{path} uses @ before any $ORIGIN; give the step a zone")
        return origin
    if name.endswith("."):
        return name[:-1].lower()
    if origin is None:
        raise DnsError(
            f"{path} has the relative name {name!r} but no $ORIGIN; give the step a zone"
        )
    return f"{name.lower()}.{origin}"


def parse_zone(text: str, origin: str | None, path: Path) -> list[ZoneRecord]:
    """The records of a zone file, with where each one is written."""
    lines = text.splitlines()
    records: list[ZoneRecord] = []
    owner: str | None = None
    i = 0
    while i < len(lines):
        tokens, depth = _tokens(lines[i], i)
        first = i
        while depth > 0 and i + 1 < len(lines):
            i += 1
            more, change = _tokens(lines[i], i)
            tokens += more
            depth += change
        i += 1
        if not tokens:
            continue
        head = tokens[0].text
        if head.startswith("$"):
            if head.upper() == "$ORIGIN" and len(tokens) > 1:
                origin = _absolute(tokens[1].text, origin, path)
            continue
        if lines[first][:1] in (" ", "\t"):
            if owner is None:
                raise DnsError(f"{path}:{first + 1}: a record without an owner name")
            owner_text = None
        else:
            owner_text = head
            owner = _absolute(head, origin, path)
            tokens = tokens[1:]
        while tokens and (_TTL.match(tokens[0].text) or tokens[0].text.upper() in CLASSES):
            tokens = tokens[1:]
        if not tokens:
            raise DnsError(f"{path}:{first + 1}: a record without a type")
        records.append(
            ZoneRecord(first, i - 1, owner, owner_text, tokens[0].text.upper(), tokens[1:])
        )
    return records


def next_serial(old: int, today: datetime) -> int:
    """Today's ``YYYYMMDD00`` when the serial is a date and that is larger; else one more."""
    dated = int(today.strftime("%Y%m%d")) * 100
    if 1970010100 <= old < dated <= 4294967295:
        return dated
    return (old + 1) % (1 << 32)


class ZoneFile:
    def __init__(self, path: Path, zone: str | None) -> None:
        self.path = path
        self.zone = host_name(zone) if zone else None
        self.where = f"zone file {path}"

    def _matching(self, records: list[ZoneRecord], name: str, rtype: str) -> list[ZoneRecord]:
        return [r for r in records if r.owner == name and r.rtype == rtype]

    def current(self, record: str, rtype: str) -> str | None:
        text = _read(self.path, "zone file")
        name = host_name(record)
        found = self._matching(parse_zone(text, self.zone, self.path), name, rtype)
        values = [normal_value(rtype, r.rdata[0].text) for r in found if r.rdata]
        return ", ".join(values) if values else None

    def serial(self) -> int | None:
        soa = self._soa(parse_zone(_read(self.path, "zone file"), self.zone, self.path))
        return int(soa.text) if soa else None

    def _soa(self, records: list[ZoneRecord]) -> Token | None:
        for r in records:
            if r.rtype == "SOA":
                if len(r.rdata) < 3 or not r.rdata[2].text.isdigit():
                    raise DnsError(f"{self.path}:{r.first + 1}: the SOA record has no serial")
                return r.rdata[2]
        return None

    def set(self, record: str, rtype: str, value: str, ttl: int) -> None:
        name = host_name(record)
        if self.zone and name != self.zone and not name.endswith(f".{self.zone}"):
            raise DnsError(f"{name} is not in zone {self.zone}")
        if rtype == RecordType.CNAME:
            written = f"{host_name(value)}."  # absolute: a bare name would be relative
        else:
            written = normal_value(rtype, value)
        with _turn(self.path.absolute()):
            text = _read(self.path, "zone file")
            records = parse_zone(text, self.zone, self.path)
            others = sorted({r.rtype for r in records if r.owner == name and r.rtype != rtype})
            if rtype == RecordType.CNAME and others:
                raise DnsError(f"{name} has {', '.join(others)} records; a CNAME cannot join them")
            if rtype != RecordType.CNAME and "CNAME" in others:
                raise DnsError(f"{name} is a CNAME; remove it before giving it {rtype} records")
            lines = text.splitlines()
            new: dict[int, str | None] = {}  # line index -> replacement (None: removed)
            soa = self._soa(records)
            if soa is not None:
                serial = next_serial(int(soa.text), datetime.now(UTC))
                row = lines[soa.line]
                lines[soa.line] = f"{row[: soa.start]}{serial}{row[soa.end :]}"
            matching = self._matching(records, name, rtype)
            if matching:
                keep, *drop = matching
                owner = keep.owner_text if keep.owner_text is not None else ""
                new[keep.first] = f"{owner}\t{ttl}\tIN\t{rtype}\t{written}"
                new.update((n, None) for n in range(keep.first + 1, keep.last + 1))
                for gone in drop:
                    new.update((n, None) for n in range(gone.first, gone.last + 1))
                for gone in drop:
                    self._keep_owner(records, gone, new, lines)
            out = [new.get(n, line) for n, line in enumerate(lines)]
            kept = [line for line in out if line is not None]
            if not matching:
                kept.append(f"{name}.\t{ttl}\tIN\t{rtype}\t{written}")
            replace_file(self.path, "\n".join(kept) + "\n")

    @staticmethod
    def _keep_owner(
        records: list[ZoneRecord], gone: ZoneRecord, new: dict[int, str | None], lines: list[str]
    ) -> None:
        """The next record left may have inherited a removed record's owner: write it out."""
        if gone.owner_text is None:
            return
        after = [r for r in records if r.first > gone.last and new.get(r.first, "") is not None]
        if after and after[0].owner_text is None and after[0].owner == gone.owner:
            row = new.get(after[0].first) or lines[after[0].first]
            new[after[0].first] = f"{gone.owner}.{row}"


# -- hosts files ---------------------------------------------------------------------


def _family(rtype: str) -> int:
    return 6 if rtype == RecordType.AAAA else 4


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _hosts_line(line: str) -> tuple[Address, list[str]] | None:
    fields = line.split("#", 1)[0].split()
    if len(fields) < 2:
        return None
    try:
        return ipaddress.ip_address(fields[0]), fields[1:]
    except ValueError:
        return None


def _names(names: list[str]) -> list[str]:
    return [n.lower().rstrip(".") for n in names]


class HostsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"hosts file {path}"

    def current(self, record: str, rtype: str) -> str | None:
        name = host_name(record)
        for line in _read(self.path, "hosts file").splitlines():
            entry = _hosts_line(line)
            if entry and entry[0].version == _family(rtype) and name in _names(entry[1]):
                return str(entry[0])
        return None

    def set(self, record: str, rtype: str, value: str, ttl: int) -> None:
        name = host_name(record)
        with _turn(self.path.absolute()):
            out: list[str] = []
            placed = False
            for line in _read(self.path, "hosts file").splitlines():
                entry = _hosts_line(line)
                if not entry or entry[0].version != _family(rtype):
                    out.append(line)
                    continue
                address, names = entry
                rest = [n for n, bare in zip(names, _names(names), strict=True) if bare != name]
                if len(rest) == len(names):
                    out.append(line)
                    continue
                if not placed:
                    out.append(f"{normal_value(rtype, value)}\t{record}")
                    placed = True
                if rest:
                    comment = f"\t#{line.split('#', 1)[1]}" if "#" in line else ""
                    out.append(f"{address}\t{' '.join(rest)}{comment}")
            if not placed:
                out.append(f"{normal_value(rtype, value)}\t{record}")
            replace_file(self.path, "\n".join(out) + "\n")


# -- Route 53 ------------------------------------------------------------------------

ROUTE53_POLL_S = 5


class Route53:
    def __init__(self, hosted_zone_id: str, wait_s: float | None = None, client: Any = None):
        self.zone_id = hosted_zone_id
        self.wait_s = wait_s or 600.0
        self.where = f"Route 53 hosted zone {hosted_zone_id}"
        self._client = client  # a boto3 Route 53 client; made on first use when None

    def _api(self) -> Any:
        if self._client is None:
            import boto3  # slow to import, and only this provider needs it

            self._client = boto3.client("route53")
        return self._client

    def _fail(self, exc: Exception) -> DnsError:
        return DnsError(f"{self.where}: {exc}")

    def current(self, record: str, rtype: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        name = host_name(record)
        try:
            listed = self._api().list_resource_record_sets(
                HostedZoneId=self.zone_id,
                StartRecordName=f"{name}.",
                StartRecordType=rtype,
                MaxItems="1",
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc) from exc
        for rrset in listed.get("ResourceRecordSets", []):
            # Route 53 spells names with a trailing dot and escapes "*" as \052.
            found = str(rrset["Name"]).replace("\\052", "*").rstrip(".").lower()
            if found != name or rrset["Type"] != rtype:
                continue
            if "SetIdentifier" in rrset:
                raise DnsError(
                    f"{name} {rtype} in {self.where} uses weighted, latency or failover "
                    "routing; reprieve changes simple records only"
                )
            if "AliasTarget" in rrset:
                return f"alias {rrset['AliasTarget']['DNSName']}"
            values = [normal_value(rtype, r["Value"]) for r in rrset.get("ResourceRecords", [])]
            return ", ".join(values) or None
        return None

    def set(self, record: str, rtype: str, value: str, ttl: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        name = host_name(record)
        change = {
            "Action": "UPSERT",
            "ResourceRecordSet": {
                "Name": f"{name}.",
                "Type": rtype,
                "TTL": ttl,
                "ResourceRecords": [{"Value": value}],
            },
        }
        try:
            api = self._api()
            done = api.change_resource_record_sets(
                HostedZoneId=self.zone_id,
                ChangeBatch={"Comment": "reprieve runbook", "Changes": [change]},
            )
            api.get_waiter("resource_record_sets_changed").wait(
                Id=done["ChangeInfo"]["Id"],
                WaiterConfig={
                    "Delay": ROUTE53_POLL_S,
                    "MaxAttempts": max(1, math.ceil(self.wait_s / ROUTE53_POLL_S)),
                },
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc) from exc
