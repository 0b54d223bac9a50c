"""What a vault can restore of a PostgreSQL resource: continuity and window.

WAL continuity: from the oldest base backup's first segment on, every
segment of each timeline must be there up to the newest one of that
timeline; segments of a timeline above 1 need that timeline's history file
(without it, recovery cannot follow the switch). The restorable window runs
from the end of the oldest base backup whose own WAL is complete to the
last commit in the newest WAL, read from the log itself with
``pg_waldump``: an object's upload time says when it was sent, not what it
holds.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprieve.errors import ReprieveError, UsageError
from reprieve.sources.pg_feeder import missing_between
from reprieve.sources.postgres import base_meta, pg_tool, segment_number
from reprieve.vault.logs import LogListing, LogStore, resources_with_logs
from reprieve.vault.points import Point
from reprieve.vault.repository import Vault

COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
TAIL_SEGMENTS = 3


def last_commit_time(store: LogStore, listing: LogListing) -> datetime | None:
    """The newest commit in the vault's WAL (looking at the last few segments)."""
    names = listing.available()[-TAIL_SEGMENTS:]
    with tempfile.TemporaryDirectory(prefix="reprieve-waldump-") as tmp:
        for name in reversed(names):
            path = Path(tmp) / name
            path.write_bytes(store.segment(name, listing))
            done = subprocess.run(
                [pg_tool("pg_waldump"), "--path", tmp, "--rmgr=Transaction", name],
                capture_output=True,
                text=True,
                env={**os.environ, "TZ": "UTC"},
            )
            path.unlink()
            found = COMMIT.findall(done.stdout)
            if found:
                return datetime.fromisoformat(found[-1]).replace(tzinfo=UTC)
    return None


@dataclass
class Continuity:
    resource: str
    bases: int
    segments: int
    first: str | None
    last: str | None
    gaps: list[str] = field(default_factory=list)
    timeline_conflicts: list[str] = field(default_factory=list)
    earliest: datetime | None = None
    latest: datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.timeline_conflicts and self.earliest is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "base_backups": self.bases,
            "segments": self.segments,
            "first": self.first,
            "last": self.last,
            "gaps": self.gaps,
            "timeline_conflicts": self.timeline_conflicts,
            "window": {
                "earliest": self.earliest.isoformat() if self.earliest else None,
                "latest": self.latest.isoformat() if self.latest else None,
            },
            "ok": self.ok,
        }


@dataclass
class Window:
    earliest: datetime | None
    latest: datetime | None

    def describe(self) -> str:
        def fmt(when: datetime | None) -> str:
            return when.isoformat(sep=" ", timespec="seconds") if when else "?"

        return f"{fmt(self.earliest)} to {fmt(self.latest)}"


def restorable_window(
    store: LogStore, bases: list[Point], listing: LogListing, with_latest: bool
) -> Window:
    usable = [
        p
        for p in bases
        if base_meta(p)
        and not missing_between(
            listing,
            base_meta(p)["start_wal"],
            base_meta(p)["stop_wal"],
            int(base_meta(p)["segment_size"]),
        )
    ]
    earliest = datetime.fromisoformat(base_meta(usable[0])["stop_time"]) if usable else None
    latest = last_commit_time(store, listing) if with_latest and usable else None
    return Window(earliest, latest)


def continuity(vault: Vault, resource: str, bases: list[Point]) -> Continuity:
    """Gaps, timeline conflicts and window of one database, given its base backups."""
    store = LogStore(vault, resource)
    listing = store.listing()
    bases = [p for p in bases if base_meta(p)]
    available = listing.available()
    found = Continuity(resource, len(bases), len(available), None, None)
    if available:
        found.first, found.last = available[0], available[-1]
    if not bases:
        return found
    seg = int(base_meta(bases[0])["segment_size"])
    oldest = min(base_meta(p)["start_wal"] for p in bases)
    by_tli: dict[int, list[str]] = {}
    for name in available:
        tli, _ = segment_number(name, seg)
        by_tli.setdefault(tli, []).append(name)
    for tli, names in sorted(by_tli.items()):
        if tli > 1 and f"{tli:08X}.history" not in listing.histories:
            found.timeline_conflicts.append(f"timeline {tli} has segments but no {tli:08X}.history")
        first = max(names[0], f"{tli:08X}{oldest[8:]}") if tli == int(oldest[:8], 16) else names[0]
        found.gaps += missing_between(listing, first, names[-1], seg)
    window = restorable_window(store, bases, listing, with_latest=True)
    found.earliest, found.latest = window.earliest, window.latest
    return found


def check_databases(vault: Vault, read_data: bool) -> tuple[list[Continuity], list[str]]:
    """Continuity and window of every database resource; problems as lines."""
    found, problems = [], []
    points = vault.points()  # read once for every database
    with_logs = set(resources_with_logs(vault))
    names = sorted(with_logs | {p.resource for p in points if p.kind == "postgres"})
    for resource in names:
        bases = [p for p in points if p.resource == resource and p.kind == "postgres"]
        try:
            state = continuity(vault, resource, bases)
        except UsageError as exc:  # no pg_waldump here: continuity without the window end
            problems.append(f"WAL of {resource}: {exc}")
            continue
        found.append(state)
        problems += [f"WAL of {resource}: segment {name} is missing" for name in state.gaps]
        problems += [f"WAL of {resource}: {text}" for text in state.timeline_conflicts]
        if state.bases and state.earliest is None:
            problems.append(f"WAL of {resource}: no base backup has all the WAL it needs")
        if read_data:
            store = LogStore(vault, resource)
            for name, _ in store.names():
                try:
                    store.get(name)
                except ReprieveError as exc:
                    problems.append(f"WAL of {resource}: {name}: {exc}")
    return found, problems
