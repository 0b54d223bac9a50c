"""Cron schedules: parse the standard five-field syntax and walk its firings.

A schedule is ``minute hour day-of-month month day-of-week``. Each field takes
``*``, numbers, ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n`` (``a``
to the field's maximum, Saturday for weekdays), and comma lists of these. Months take JAN-DEC and
days SUN-SAT in any case; day-of-week 0 and 7 are both Sunday. The macros
``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``,
``@midnight`` and ``@hourly`` stand for their usual expansions.

Days follow Vixie cron: when both day fields are restricted (neither starts
with ``*``), a day matches if either field does; otherwise both must. So
``0 0 1-7 * MON`` fires on the first seven days *and* on every Monday.

Everything is evaluated in UTC at minute resolution, so a schedule fires at
the same instants for every host, and seconds are ignored. Searches walk
matching days (skipping whole months the month field excludes), then the
sorted hours and minutes of a day, so a leap-day schedule costs a few hundred
steps, not millions of minutes. A search gives up after one 400-year
Gregorian cycle, which holds a firing of every schedule that parses: gaps can
pass eight years, as ``0 0 */31 2 1`` (February 1 when it is a Monday, since a
``*``-led day field makes the days AND) goes eleven years between firings.

``longest_gap`` is exact: it walks the matching days of that whole cycle,
about 50 ms for a daily schedule, so compute it once per policy, not per tick.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import NamedTuple

from reprieve.errors import UsageError

# 400 Gregorian years are exactly 20,871 weeks, so dates and weekdays repeat
# with this period: a walk over one cycle sees every pattern a schedule has.
_CYCLE_DAYS = 146_097
_CYCLE_START = date(2000, 1, 1)
_MINUTE = timedelta(minutes=1)

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The longest each month ever gets: February 29 is a real date.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(UsageError, ValueError):
    """A schedule that does not parse or can never fire (exit code 2, as usage)."""


class _Spec(NamedTuple):
    name: str
    lo: int
    hi: int
    names: Mapping[str, int]
    top: int  # where `*` and `a/n` end: day-of-week 7 only aliases Sunday

    @property
    def accepts(self) -> str:
        names = list(self.names)
        return f"a number {self.lo}-{self.hi}" + (
            f" or a name {names[0]}-{names[-1]}" if names else ""
        )


_SPECS = (
    _Spec("minute", 0, 59, {}, 59),
    _Spec("hour", 0, 23, {}, 23),
    _Spec("day-of-month", 1, 31, {}, 31),
    _Spec("month", 1, 12, {n: i for i, n in enumerate(_MONTH_NAMES, 1)}, 12),
    _Spec("day-of-week", 0, 7, {n: i for i, n in enumerate(_DAY_NAMES)}, 6),
)


def _value(spec: _Spec, part: str, item: str) -> int:
    if not part:
        raise CronError(f"{spec.name} field {item!r} is missing a number")
    if part.isascii() and part.isdigit():
        number = int(part)
    elif part.upper() in spec.names:
        number = spec.names[part.upper()]
    else:
        raise CronError(f"{spec.name} field {part!r} is not {spec.accepts}")
    if not spec.lo <= number <= spec.hi:
        raise CronError(f"{spec.name} field {part!r} is out of range {spec.lo}-{spec.hi}")
    return number


def _item(spec: _Spec, item: str) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()):
            raise CronError(f"{spec.name} field {item!r} needs a whole-number step after '/'")
        step = int(step_text)
        span = spec.top - spec.lo + 1
        if not 1 <= step <= span:
            raise CronError(f"{spec.name} field {item!r} has step {step}; use a step of 1-{span}")
    if base == "*":
        return range(spec.lo, spec.top + 1, step)
    first_text, dash, last_text = base.partition("-")
    first = _value(spec, first_text, item)
    last = _value(spec, last_text, item) if dash else max(spec.top, first) if slash else first
    if first > last:
        raise CronError(
            f"{spec.name} field {item!r} runs backward ({first} > {last}); write ranges "
            "low to high, and a range that wraps around as a list of two"
        )
    return range(first, last + 1, step)


def _field(spec: _Spec, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{spec.name} field {text!r} has an empty list item; drop the comma")
        values.update(_item(spec, item))
    if spec.name == "day-of-week":
        return frozenset(v % 7 for v in values)
    return frozenset(values)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{t.isoformat()} has no time zone; pass an aware datetime (UTC)")
    return t.astimezone(UTC)


def _utc_minute(t: datetime) -> datetime:
    return _utc(t).replace(second=0, microsecond=0)


def _at(d: date, hour: int, minute: int) -> datetime:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC)


def _shifted(d: date, days: int) -> date:
    return date.fromordinal(min(max(d.toordinal() + days, 1), date.max.toordinal()))


@dataclass(frozen=True)
class Cron:
    """A parsed schedule; constructing one validates ``text``."""

    text: str
    _minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _hours: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _doms: frozenset[int] = field(init=False, repr=False, compare=False)
    _months: frozenset[int] = field(init=False, repr=False, compare=False)
    _dows: frozenset[int] = field(init=False, repr=False, compare=False)
    _either_day: bool = field(init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Cron:
        return cls(text)

    def __post_init__(self) -> None:
        stripped = self.text.strip()
        if stripped.startswith("@") and stripped.lower() not in _MACROS:
            raise CronError(f"unknown macro {stripped!r}; use one of {', '.join(_MACROS)}")
        texts = _MACROS.get(stripped.lower(), stripped).split()
        if len(texts) != 5:
            raise CronError(
                f"schedule {self.text!r} has {len(texts)} fields; cron needs 5: "
                "minute hour day-of-month month day-of-week"
            )
        minutes, hours, doms, months, dows = (
            _field(spec, text) for spec, text in zip(_SPECS, texts, strict=True)
        )
        either_day = not texts[2].startswith("*") and not texts[4].startswith("*")
        # Only a day-of-month paired with an unrestricted weekday can miss every
        # month: a `*`-led day-of-month always holds day 1, which falls on each
        # weekday in turn, and a restricted weekday under the OR rule fires weekly.
        if texts[4].startswith("*") and not any(
            d <= _MONTH_DAYS[m - 1] for m in months for d in doms
        ):
            raise CronError(
                f"schedule {self.text!r} never fires: no month in month field {texts[3]!r} "
                f"has a day from day-of-month field {texts[2]!r}"
            )
        object.__setattr__(self, "_minutes", tuple(sorted(minutes)))
        object.__setattr__(self, "_hours", tuple(sorted(hours)))
        object.__setattr__(self, "_doms", doms)
        object.__setattr__(self, "_months", months)
        object.__setattr__(self, "_dows", dows)
        object.__setattr__(self, "_either_day", either_day)

    def matches(self, t: datetime) -> bool:
        """Whether the schedule fires in t's minute, read in UTC."""
        u = _utc(t)
        return (
            u.month in self._months
            and self._day_matches(u.date())
            and u.hour in self._hours
            and u.minute in self._minutes
        )

    def next_after(self, t: datetime) -> datetime:
        """The first firing strictly after t, in UTC."""
        start = _utc_minute(t) + _MINUTE
        for d in self._days(start.date(), _shifted(start.date(), _CYCLE_DAYS)):
            since = (start.hour, start.minute) if d == start.date() else (0, 0)
            hm = self._first_time(*since)
            if hm:
                return _at(d, *hm)
        raise ValueError(f"{self.text!r} does not fire after {t.isoformat()} in the calendar")

    def previous_before(self, t: datetime) -> datetime | None:
        """The last firing at or before t, in UTC; None if none within 400 years."""
        end = _utc_minute(t)
        for d in self._days(end.date(), _shifted(end.date(), -_CYCLE_DAYS)):
            until = (end.hour, end.minute) if d == end.date() else (23, 59)
            hm = self._last_time(*until)
            if hm:
                return _at(d, *hm)
        return None

    def fires_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every firing f with start <= f < end, in order, in UTC."""
        lo, hi = _utc(start), _utc(end)
        if hi <= lo:
            return iter(())
        return self._fires(lo, hi)

    def longest_gap(self) -> timedelta:
        """The longest time between two consecutive firings.

        Exact: it walks the matching days of one 400-year Gregorian cycle
        (from 2000-01-01, wrapping to the cycle's start), after which dates and
        weekdays repeat. ``0 0 29 2 *`` gives 2096-02-29 to 2104-02-29.
        """
        days = [
            d.toordinal() for d in self._days(_CYCLE_START, _shifted(_CYCLE_START, _CYCLE_DAYS - 1))
        ]
        days.append(days[0] + _CYCLE_DAYS)
        times = [h * 60 + m for h in self._hours for m in self._minutes]
        within_day = max((b - a for a, b in pairwise(times)), default=0)
        across_days = max(b - a for a, b in pairwise(days)) * 1440 - (times[-1] - times[0])
        return timedelta(minutes=max(within_day, across_days))

    def _fires(self, lo: datetime, hi: datetime) -> Iterator[datetime]:
        for d in self._days(lo.date(), (hi - timedelta(microseconds=1)).date()):
            for hour in self._hours:
                for minute in self._minutes:
                    f = _at(d, hour, minute)
                    if f >= hi:
                        return
                    if f >= lo:
                        yield f

    def _day_matches(self, d: date) -> bool:
        dom = d.day in self._doms
        dow = d.isoweekday() % 7 in self._dows
        return dom or dow if self._either_day else dom and dow

    def _days(self, first: date, last: date) -> Iterator[date]:
        """Matching days from first to last inclusive, walking backward if last < first."""
        o, stop = first.toordinal(), last.toordinal()
        step = 1 if stop >= o else -1
        while (o - stop) * step <= 0:
            d = date.fromordinal(o)
            if d.month not in self._months:
                # Jump to the first day of the next month, or the last of the previous.
                o += calendar.monthrange(d.year, d.month)[1] - d.day + 1 if step > 0 else -d.day
                continue
            if self._day_matches(d):
                yield d
            o += step

    def _first_time(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The earliest firing time of a day at or after hour:minute."""
        i = bisect_left(self._hours, hour)
        if i < len(self._hours) and self._hours[i] == hour:
            j = bisect_left(self._minutes, minute)
            if j < len(self._minutes):
                return hour, self._minutes[j]
            i += 1
        return (self._hours[i], self._minutes[0]) if i < len(self._hours) else None

    def _last_time(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The latest firing time of a day at or before hour:minute."""
        i = bisect_right(self._hours, hour) - 1
        if i >= 0 and self._hours[i] == hour:
            j = bisect_right(self._minutes, minute) - 1
            if j >= 0:
                return hour, self._minutes[j]
            i -= 1
        return (self._hours[i], self._minutes[-1]) if i >= 0 else None
