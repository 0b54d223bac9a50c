from __future__ import annotations

import re
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprieve.errors import UsageError
from reprieve.policy.cron import Cron, CronError


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


ALL_MINUTES = frozenset(range(60))
ALL_HOURS = frozenset(range(24))
ALL_DOMS = frozenset(range(1, 32))
ALL_MONTHS = frozenset(range(1, 13))
ALL_DOWS = frozenset(range(7))


@dataclass(frozen=True)
class Oracle:
    """A schedule expanded by hand, matched the obvious way (Sunday is 0)."""

    minutes: frozenset[int] = ALL_MINUTES
    hours: frozenset[int] = ALL_HOURS
    doms: frozenset[int] = ALL_DOMS
    months: frozenset[int] = ALL_MONTHS
    dows: frozenset[int] = ALL_DOWS
    either_day: bool = False

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.doms
        dow = (d.weekday() + 1) % 7 in self.dows
        return (dom or dow) if self.either_day else (dom and dow)

    def every_minute(self, start: datetime, end: datetime) -> list[datetime]:
        """Every firing in [start, end), by visiting each minute in turn."""
        found = []
        t = start
        while t < end:
            if self.day_matches(t.date()) and t.hour in self.hours and t.minute in self.minutes:
                found.append(t)
            t += timedelta(minutes=1)
        return found


def s(*values: Iterable[int] | int) -> frozenset[int]:
    out: set[int] = set()
    for v in values:
        out.update([v] if isinstance(v, int) else v)
    return frozenset(out)


CASES = {
    "* * * * *": Oracle(),
    "*/5 * * * *": Oracle(minutes=s(range(0, 60, 5))),
    "0 */6 * * *": Oracle(minutes=s(0), hours=s(0, 6, 12, 18)),
    "0 9-17 * * 1-5": Oracle(minutes=s(0), hours=s(range(9, 18)), dows=s(range(1, 6))),
    "15,45 8-18/5 * * *": Oracle(minutes=s(15, 45), hours=s(8, 13, 18)),
    "10/20 1/7 * * 5-7": Oracle(minutes=s(10, 30, 50), hours=s(1, 8, 15, 22), dows=s(5, 6, 0)),
    "30 2 1,15,31 * *": Oracle(minutes=s(30), hours=s(2), doms=s(1, 15, 31)),
    # Both day fields restricted: the OR rule.
    "0 12 13 * FRI": Oracle(minutes=s(0), hours=s(12), doms=s(13), dows=s(5), either_day=True),
    "0 0 1-7 * mon": Oracle(
        minutes=s(0), hours=s(0), doms=s(range(1, 8)), dows=s(1), either_day=True
    ),
    "0 6 29 feb sun": Oracle(
        minutes=s(0), hours=s(6), doms=s(29), months=s(2), dows=s(0), either_day=True
    ),
    # A `*`-led day-of-month keeps the AND rule even though it is restricted.
    "0 0 */10 * MON": Oracle(minutes=s(0), hours=s(0), doms=s(1, 11, 21, 31), dows=s(1)),
    "5 4 * FEB,Mar SUN": Oracle(minutes=s(5), hours=s(4), months=s(2, 3), dows=s(0)),
    "0 22 * * 7": Oracle(minutes=s(0), hours=s(22), dows=s(0)),
    "20 */7 */2 * *": Oracle(minutes=s(20), hours=s(0, 7, 14, 21), doms=s(range(1, 32, 2))),
    "0-10/5,58 23 * 1-2,12 *": Oracle(minutes=s(0, 5, 10, 58), hours=s(23), months=s(1, 2, 12)),
    "@weekly": Oracle(minutes=s(0), hours=s(0), dows=s(0)),
    "@hourly": Oracle(minutes=s(0)),
}

# A leap February running into March, and a turn of the year.
WINDOWS = ((at(2024, 2, 10), at(2024, 3, 12)), (at(2025, 12, 24, 12, 30), at(2026, 1, 5)))


@cache
def brute_force(text: str, window: int) -> list[datetime]:
    return CASES[text].every_minute(*WINDOWS[window])


@pytest.mark.parametrize("text", list(CASES))
def test_fires_between_agrees_with_visiting_every_minute(text: str) -> None:
    cron = Cron.parse(text)
    for window, (start, end) in enumerate(WINDOWS):
        expected = brute_force(text, window)
        assert list(cron.fires_between(start, end)) == expected
        assert all(cron.matches(f) for f in expected)


@pytest.mark.parametrize("text", list(CASES))
def test_next_and_previous_agree_with_visiting_every_minute(text: str) -> None:
    cron = Cron.parse(text)
    start, _ = WINDOWS[0]
    firings = brute_force(text, 0)
    # Probe off-minute instants, and exact firings, which next_after must step past.
    probes = [start + timedelta(minutes=97 * i, seconds=30) for i in range(460)]
    probes += firings[:: max(1, len(firings) // 60)]
    for t in probes:
        later = bisect_right(firings, t)
        if later < len(firings):
            assert cron.next_after(t) == firings[later], t
        earlier = bisect_right(firings, t) - 1
        if earlier >= 0:
            assert cron.previous_before(t) == firings[earlier], t


@pytest.mark.parametrize("text", ["0 12 13 * FRI", "0 0 1-7 * mon", "0 0 */10 * MON", "@hourly"])
def test_matches_is_true_at_exactly_the_brute_force_firings(text: str) -> None:
    cron = Cron.parse(text)
    (start, end), firings = WINDOWS[0], set(brute_force(text, 0))
    # Every 7th minute reaches each minute of the hour, and every firing is probed too.
    steps = (end - start) // timedelta(minutes=7)
    probes = [start + timedelta(minutes=7 * i) for i in range(steps)]
    for t in sorted(firings.union(probes)):
        assert cron.matches(t) == (t in firings), t


@st.composite
def schedules(draw: st.DrawFn) -> tuple[str, Oracle]:
    def subset(lo: int, hi: int, max_size: int) -> frozenset[int]:
        values = st.integers(lo, hi)
        return frozenset(draw(st.sets(values, min_size=1, max_size=max_size)))

    star_dom, star_dow = draw(st.booleans()), draw(st.booleans())
    # Days up to 31 may leave a day-of-month-only schedule unable to fire.
    doms = ALL_DOMS if star_dom else subset(1, 28, 4)
    oracle = Oracle(
        minutes=subset(0, 59, 3),
        hours=subset(0, 23, 3),
        doms=doms,
        months=subset(1, 12, 4),
        dows=ALL_DOWS if star_dow else subset(0, 6, 3),
        either_day=not star_dom and not star_dow,
    )

    def listed(values: frozenset[int], star: bool = False) -> str:
        return "*" if star else ",".join(str(v) for v in sorted(values))

    text = " ".join(
        [
            listed(oracle.minutes),
            listed(oracle.hours),
            listed(oracle.doms, star_dom),
            listed(oracle.months),
            listed(oracle.dows, star_dow),
        ]
    )
    return text, oracle


@settings(max_examples=60, deadline=None)
@given(schedule=schedules(), day=st.integers(0, 3000), minute=st.integers(0, 1439))
def test_next_after_finds_the_first_firing_a_day_by_day_scan_finds(
    schedule: tuple[str, Oracle], day: int, minute: int
) -> None:
    text, oracle = schedule
    t = at(2020, 1, 1) + timedelta(days=day, minutes=minute, seconds=1)
    d = t.date()
    while True:
        if oracle.day_matches(d):
            times = [
                at(d.year, d.month, d.day, h, m)
                for h in sorted(oracle.hours)
                for m in sorted(oracle.minutes)
            ]
            later = [f for f in times if f > t]
            if later:
                expected = later[0]
                break
        d += timedelta(days=1)
    cron = Cron.parse(text)
    assert cron.next_after(t) == expected
    before = cron.previous_before(expected - timedelta(minutes=1))
    assert before is None or before <= t


def test_macros_fire_like_their_expansions() -> None:
    start, end = at(2023, 6, 1), at(2025, 6, 1)
    expansions = {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    }
    for macro, expansion in expansions.items():
        got = list(Cron.parse(macro).fires_between(start, end))
        assert got == list(Cron.parse(expansion).fires_between(start, end)), macro
        assert got, macro
    assert Cron.parse("@DAILY").next_after(at(2024, 1, 1, 5)) == at(2024, 1, 2)


def test_names_are_case_insensitive_and_equal_their_numbers() -> None:
    start, end = at(2024, 1, 1), at(2024, 6, 1)
    named = list(Cron.parse("0 0 * jan-Mar,MAY Mon-fri").fires_between(start, end))
    assert named == list(Cron.parse("0 0 * 1-3,5 1-5").fires_between(start, end))
    assert len(named) == 88


def test_day_of_week_zero_and_seven_are_both_sunday() -> None:
    start, end = at(2024, 1, 1), at(2024, 3, 1)
    sundays = list(Cron.parse("0 0 * * 0").fires_between(start, end))
    assert sundays == list(Cron.parse("0 0 * * 7").fires_between(start, end))
    assert sundays == list(Cron.parse("0 0 * * sun").fires_between(start, end))
    assert all(f.weekday() == 6 for f in sundays) and len(sundays) == 8
    # `a/n` on weekdays ends at Saturday, so MON/2 does not wrap into Sunday.
    every_other = Cron.parse("0 0 * * MON/2").fires_between(start, end)
    assert {f.strftime("%a") for f in every_other} == {"Mon", "Wed", "Fri"}


def test_times_are_read_in_utc_and_seconds_are_ignored() -> None:
    cron = Cron.parse("0 7 * * *")
    plus_two = timezone(timedelta(hours=2))
    assert cron.matches(datetime(2024, 1, 1, 9, 0, 59, tzinfo=plus_two))
    assert not cron.matches(datetime(2024, 1, 1, 7, 0, tzinfo=plus_two))
    nxt = cron.next_after(datetime(2024, 1, 1, 9, 30, tzinfo=plus_two))
    assert nxt == at(2024, 1, 2, 7) and nxt.tzinfo is UTC
    assert cron.previous_before(datetime(2024, 1, 1, 9, 0, 30, tzinfo=plus_two)) == at(
        2024, 1, 1, 7
    )
    # A start partway through a minute excludes that minute's firing.
    every = Cron.parse("* * * * *")
    partway = at(2024, 1, 1) + timedelta(seconds=1)
    assert list(every.fires_between(partway, at(2024, 1, 1, 0, 3))) == [
        at(2024, 1, 1, 0, 1),
        at(2024, 1, 1, 0, 2),
    ]
    assert list(every.fires_between(at(2024, 1, 1, 1), at(2024, 1, 1))) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c, t: c.matches(t),
        lambda c, t: c.next_after(t),
        lambda c, t: c.previous_before(t),
        lambda c, t: c.fires_between(t, t),
    ],
)
def test_naive_datetimes_are_refused(call: Callable[[Cron, datetime], object]) -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        call(Cron.parse("@daily"), datetime(2024, 1, 1))


def test_leap_day_and_yearly_searches_skip_rather_than_walk_minutes() -> None:
    leap, yearly = Cron.parse("0 0 29 2 *"), Cron.parse("@yearly")
    began = time.perf_counter()
    for _ in range(50):
        # Across 2100, which is not a leap year.
        assert leap.next_after(at(2096, 3, 1)) == at(2104, 2, 29)
        assert leap.previous_before(at(2104, 2, 28, 23, 59)) == at(2096, 2, 29)
        assert yearly.next_after(at(2024, 1, 1)) == at(2025, 1, 1)
    # Minute by minute, one leap-day search alone would visit four million minutes.
    assert time.perf_counter() - began < 1.0


def test_previous_before_is_none_before_the_calendar_has_a_firing() -> None:
    assert Cron.parse("0 0 2 1 *").previous_before(at(1, 1, 1, 12)) is None
    assert Cron.parse("0 0 2 1 *").previous_before(at(1, 1, 2, 0)) == at(1, 1, 2)


def test_rare_and_schedules_are_found_beyond_eight_years() -> None:
    # February 1 when it is a Monday: 2094, then 2100 (2100 is not a leap year), then 2106.
    rare = Cron.parse("0 0 */31 2 1")
    assert rare.next_after(at(2094, 2, 2)) == at(2100, 2, 1)
    assert rare.previous_before(at(2100, 1, 31)) == at(2094, 2, 1)
    assert rare.longest_gap() == timedelta(days=4018)


@pytest.mark.parametrize(
    ("text", "gap"),
    [
        ("*/5 * * * *", timedelta(minutes=5)),
        ("0 */6 * * *", timedelta(hours=6)),
        ("0 9-17 * * 1-5", timedelta(hours=64)),  # Friday 17:00 to Monday 09:00
        ("@monthly", timedelta(days=31)),
        ("@hourly", timedelta(hours=1)),
        ("7,8 * * * *", timedelta(minutes=59)),
        ("0 0 31 * *", timedelta(days=61)),  # Aug 31 is followed by Oct 31
        ("0 0 29 2 *", timedelta(days=2921)),  # 2096-02-29 to 2104-02-29: 8 years
    ],
)
def test_longest_gap(text: str, gap: timedelta) -> None:
    assert Cron.parse(text).longest_gap() == gap


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("61 * * * *", "minute field '61' is out of range 0-59"),
        ("* 24 * * *", "hour field '24' is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0' is out of range 1-31"),
        ("* * * 1-13 *", "month field '13' is out of range 1-12"),
        ("* * * * 8", "day-of-week field '8' is out of range 0-7"),
        (
            "* * * *",
            "schedule '* * * *' has 4 fields; cron needs 5: "
            "minute hour day-of-month month day-of-week",
        ),
        (
            "0 0 * * * *",
            "schedule '0 0 * * * *' has 6 fields; cron needs 5: "
            "minute hour day-of-month month day-of-week",
        ),
        ("*/0 * * * *", "minute field '*/0' has step 0; use a step of 1-60"),
        ("* 1-5/0 * * *", "hour field '1-5/0' has step 0; use a step of 1-24"),
        ("*/90 * * * *", "minute field '*/90' has step 90; use a step of 1-60"),
        ("*/x * * * *", "minute field '*/x' needs a whole-number step after '/'"),
        (
            "5-2 * * * *",
            "minute field '5-2' runs backward (5 > 2); write ranges low to high, "
            "and a range that wraps around as a list of two",
        ),
        (
            "* * * * FRI-SUN",
            "day-of-week field 'FRI-SUN' runs backward (5 > 0); write ranges low to high, "
            "and a range that wraps around as a list of two",
        ),
        ("* * * FOO *", "month field 'FOO' is not a number 1-12 or a name JAN-DEC"),
        ("* * * * funday", "day-of-week field 'funday' is not a number 0-7 or a name SUN-SAT"),
        ("* * * * JAN", "day-of-week field 'JAN' is not a number 0-7 or a name SUN-SAT"),
        ("x * * * *", "minute field 'x' is not a number 0-59"),
        ("-5 * * * *", "minute field '-5' is missing a number"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty list item; drop the comma"),
        ("* * 1, * *", "day-of-month field '1,' has an empty list item; drop the comma"),
        (
            "@often",
            "unknown macro '@often'; use one of @yearly, @annually, @monthly, @weekly, "
            "@daily, @midnight, @hourly",
        ),
        (
            "0 0 30 2 *",
            "schedule '0 0 30 2 *' never fires: no month in month field '2' "
            "has a day from day-of-month field '30'",
        ),
        (
            "0 0 31 4,6,9,11 *",
            "schedule '0 0 31 4,6,9,11 *' never fires: no month in month field "
            "'4,6,9,11' has a day from day-of-month field '31'",
        ),
    ],
)
def test_bad_schedules_are_refused_with_one_line_saying_why(text: str, message: str) -> None:
    with pytest.raises(CronError, match=f"^{re.escape(message)}$") as caught:
        Cron.parse(text)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, UsageError)
    assert caught.value.exit_code == 2


def test_rarely_possible_days_are_accepted() -> None:
    # Day 30 exists in April; with a weekday restriction the OR rule fires weekly.
    assert Cron.parse("0 0 30 2,4 *").next_after(at(2024, 1, 1)) == at(2024, 4, 30)
    assert Cron.parse("0 0 30 2 MON").next_after(at(2024, 2, 1)) == at(2024, 2, 5)


def test_schedules_compare_by_their_text() -> None:
    assert Cron.parse("@daily") == Cron("@daily")
    assert hash(Cron.parse("@daily")) == hash(Cron("@daily"))
    assert Cron.parse("@daily") != Cron.parse("0 0 * * *")
    assert repr(Cron("@daily")) == "Cron(text='@daily')"
