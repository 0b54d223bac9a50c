"""Which recovery points a set of retention rules keeps, and why.

The rules are restic's ``forget --keep-*`` rules, computed in UTC so that a
vault shared across time zones prunes the same way everywhere:

- ``last`` keeps the N newest points;
- ``hourly``, ``daily``, ``weekly`` (ISO year and week), ``monthly`` and
  ``yearly`` each keep the newest point of each of the N newest buckets that
  hold a point;
- ``within`` keeps every point no older than the window, measured back from
  ``now``.

A point is kept when any rule keeps it, and its reasons name every rule that
did. Points are ranked newest first; equal times fall back to the id, in
descending order, so a decision never depends on the order points were listed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar

from reprieve.errors import UsageError


class Dated(Protocol):
    """Anything retention can rank: a recovery point, or a stand-in for one."""

    @property
    def id(self) -> str: ...

    @property
    def time(self) -> datetime: ...


T = TypeVar("T", bound=Dated)


def _hour(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}-{t.hour:02d}"


def _day(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}"


def _iso_week(t: datetime) -> str:
    # The ISO year, not the calendar year: 2021-01-01 belongs to 2020-W53.
    year, week, _ = t.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _month(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def _year(t: datetime) -> str:
    return f"{t.year:04d}"


_BUCKETS: dict[str, Callable[[datetime], str]] = {
    "hourly": _hour,
    "daily": _day,
    "weekly": _iso_week,
    "monthly": _month,
    "yearly": _year,
}


@dataclass(frozen=True)
class RetentionRules:
    """How many points each rule keeps; each field is the ``--keep-<field>`` option."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("last", *_BUCKETS):
            count: int = getattr(self, name)
            if count < 0:
                raise UsageError(f"--keep-{name} must be 0 or more, got {count}")
        if self.within is not None and self.within < timedelta(0):
            raise UsageError(f"--keep-within must not be negative, got {self.within}")

    def is_empty(self) -> bool:
        """True when no rule would keep anything.

        A zero ``within`` counts as no rule: it keeps only points stamped at or
        after ``now``, so on its own it would let a prune delete everything.
        """
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return not any(counts) and not self.within


@dataclass(frozen=True)
class RetentionDecision(Generic[T]):
    """The outcome of applying rules: ``keep`` and ``remove`` partition the input."""

    keep: list[T]
    """Kept points, newest first."""
    remove: list[T]
    """Points no rule keeps, newest first."""
    reasons: dict[str, list[str]]
    """Kept point id -> every rule that kept it, e.g. ``["last", "daily 2026-11-20"]``."""


def _utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"naive time {moment.isoformat()}; retention needs timezone-aware times")
    return moment.astimezone(UTC)


def apply_retention(
    points: Sequence[T], rules: RetentionRules, now: datetime
) -> RetentionDecision[T]:
    """Split ``points`` into those ``rules`` keep and those they let go.

    Raises ``UsageError`` when ``rules`` is empty: a prune with no rule would
    delete every point, which is never what was meant.
    """
    if rules.is_empty():
        raise UsageError("no retention rule given; pass at least one --keep-* option")
    now = _utc(now)
    ordered = sorted(points, key=lambda p: (_utc(p.time), p.id), reverse=True)
    reasons: dict[str, list[str]] = {}

    for point in ordered[: rules.last]:
        reasons.setdefault(point.id, []).append("last")

    for name, bucket_of in _BUCKETS.items():
        left: int = getattr(rules, name)
        kept_bucket: str | None = None
        for point in ordered:
            if left == 0:
                break
            bucket = bucket_of(_utc(point.time))
            # Newest first, so a bucket's points are adjacent and the first seen is its newest.
            if bucket != kept_bucket:
                reasons.setdefault(point.id, []).append(f"{name} {bucket}")
                kept_bucket = bucket
                left -= 1

    if rules.within is not None:
        for point in ordered:
            # Subtracting the window from now could fall before year 1; this cannot.
            if now - _utc(point.time) <= rules.within:
                reasons.setdefault(point.id, []).append("within")

    return RetentionDecision(
        keep=[p for p in ordered if p.id in reasons],
        remove=[p for p in ordered if p.id not in reasons],
        reasons=reasons,
    )


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(?:[0-9]+[smhdwy])+")
_GROUP = re.compile(r"([0-9]+)([smhdwy])")


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``30m``, ``12h``, ``35d``, ``2w``, ``1y`` or sums of them like ``1d12h``.

    ``m`` is minutes and ``y`` is 365 days. Months are not offered: their
    length varies, and ``m`` already means minutes.
    """
    if not _DURATION.fullmatch(text):
        raise UsageError(
            f"invalid duration {text!r}: expected number+unit groups such as 90s, 12h or 1d12h"
            " (units: s, m, h, d, w, y)"
        )
    try:
        seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in _GROUP.findall(text))
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError) as exc:
        raise UsageError(f"duration {text!r} is too long") from exc
