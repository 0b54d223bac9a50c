from __future__ import annotations

import heapq
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reprieve.errors import UsageError
from reprieve.policy.retention import (
    RetentionDecision,
    RetentionRules,
    apply_retention,
    parse_duration,
)


@dataclass(frozen=True)
class Point:
    id: str
    time: datetime


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ids(points: Sequence[Point]) -> list[str]:
    return [p.id for p in points]


def test_keep_daily_over_thirty_days_keeps_the_seven_newest_days() -> None:
    start = at(2026, 11, 1, 3)
    points = [Point(f"d{i:02d}", start + timedelta(days=i)) for i in range(30)]

    decision = apply_retention(points, RetentionRules(daily=7), now=at(2026, 12, 1))

    assert ids(decision.keep) == [f"d{i:02d}" for i in range(29, 22, -1)]
    assert ids(decision.remove) == [f"d{i:02d}" for i in range(22, -1, -1)]
    assert decision.reasons["d29"] == ["daily 2026-11-30"]
    assert decision.reasons["d23"] == ["daily 2026-11-24"]


def test_keep_daily_keeps_the_newest_point_of_each_day() -> None:
    points = [
        Point("morning", at(2026, 11, 20, 8)),
        Point("evening", at(2026, 11, 20, 20)),
        Point("yesterday-noon", at(2026, 11, 19, 12)),
        Point("yesterday-night", at(2026, 11, 19, 23, 59)),
    ]

    decision = apply_retention(points, RetentionRules(daily=5), now=at(2026, 11, 21))

    assert ids(decision.keep) == ["evening", "yesterday-night"]
    assert ids(decision.remove) == ["morning", "yesterday-noon"]


def test_keep_last_and_monthly_union_and_list_every_reason() -> None:
    points = [
        Point("nov-20", at(2026, 11, 20)),
        Point("nov-10", at(2026, 11, 10)),
        Point("nov-01", at(2026, 11, 1)),
        Point("oct-31", at(2026, 10, 31)),
        Point("oct-02", at(2026, 10, 2)),
        Point("sep-15", at(2026, 9, 15)),
        Point("aug-15", at(2026, 8, 15)),
    ]

    decision = apply_retention(points, RetentionRules(last=2, monthly=3), now=at(2026, 11, 21))

    assert ids(decision.keep) == ["nov-20", "nov-10", "oct-31", "sep-15"]
    assert ids(decision.remove) == ["nov-01", "oct-02", "aug-15"]
    assert decision.reasons == {
        "nov-20": ["last", "monthly 2026-11"],
        "nov-10": ["last"],
        "oct-31": ["monthly 2026-10"],
        "sep-15": ["monthly 2026-09"],
    }


def test_keep_within_keeps_points_on_the_boundary_and_newer() -> None:
    now = at(2026, 11, 21, 12)
    points = [Point(f"h{i:02d}", now - timedelta(hours=i)) for i in range(48)]

    decision = apply_retention(points, RetentionRules(within=timedelta(days=1)), now=now)

    assert ids(decision.keep) == [f"h{i:02d}" for i in range(25)]
    assert decision.reasons["h24"] == ["within"]
    assert "h25" not in decision.reasons


def test_keep_within_longer_than_the_calendar_keeps_everything() -> None:
    points = [Point("old", at(1990, 1, 1)), Point("new", at(2026, 11, 20))]
    rules = RetentionRules(within=parse_duration("999999y"))

    decision = apply_retention(points, rules, now=at(2026, 11, 21))

    assert ids(decision.keep) == ["new", "old"]
    assert decision.remove == []


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    # 2020-12-31 (Thursday) and 2021-01-01 (Friday) are both in ISO week 2020-W53.
    points = [
        Point("2021-01-04", at(2021, 1, 4)),
        Point("2021-01-01", at(2021, 1, 1)),
        Point("2020-12-31", at(2020, 12, 31)),
        Point("2020-12-27", at(2020, 12, 27)),
    ]

    weekly = apply_retention(points, RetentionRules(weekly=2), now=at(2021, 1, 5))
    yearly = apply_retention(points, RetentionRules(yearly=2), now=at(2021, 1, 5))

    assert weekly.reasons == {
        "2021-01-04": ["weekly 2021-W01"],
        "2021-01-01": ["weekly 2020-W53"],
    }
    assert ids(weekly.remove) == ["2020-12-31", "2020-12-27"]
    assert yearly.reasons == {"2021-01-04": ["yearly 2021"], "2020-12-31": ["yearly 2020"]}


def test_buckets_are_computed_in_utc() -> None:
    new_york = timezone(timedelta(hours=-5))
    late_evening = Point("late", datetime(2026, 11, 20, 23, 30, tzinfo=new_york))

    decision = apply_retention([late_evening], RetentionRules(daily=1), now=at(2026, 11, 22))

    assert decision.reasons == {"late": ["daily 2026-11-21"]}


def test_equal_times_are_ranked_by_id_whatever_the_input_order() -> None:
    same = at(2026, 11, 20, 9)
    points = [Point("a", same), Point("c", same), Point("b", same)]

    decisions = [
        apply_retention(order, RetentionRules(last=1, hourly=1), now=same)
        for order in (points, points[::-1])
    ]

    for decision in decisions:
        assert ids(decision.keep) == ["c"]
        assert ids(decision.remove) == ["b", "a"]


def test_no_points_gives_an_empty_decision() -> None:
    no_points: list[Point] = []

    decision = apply_retention(no_points, RetentionRules(last=3), now=at(2026, 11, 21))

    assert decision == RetentionDecision(keep=[], remove=[], reasons={})


@pytest.mark.parametrize(
    "rules",
    [RetentionRules(), RetentionRules(within=timedelta(0))],
    ids=["no-rules", "zero-window"],
)
def test_empty_rules_refuse_instead_of_removing_everything(rules: RetentionRules) -> None:
    points = [Point("only", at(2026, 11, 20))]

    with pytest.raises(UsageError) as caught:
        apply_retention(points, rules, now=at(2026, 11, 21))

    assert str(caught.value) == "no retention rule given; pass at least one --keep-* option"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("rules", "empty"),
    [
        (RetentionRules(), True),
        (RetentionRules(within=timedelta(0)), True),
        (RetentionRules(within=timedelta(seconds=1)), False),
        (RetentionRules(last=1), False),
        (RetentionRules(yearly=1), False),
    ],
)
def test_is_empty(rules: RetentionRules, empty: bool) -> None:
    assert rules.is_empty() is empty


def test_negative_counts_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"--keep-daily must be 0 or more, got -1"):
        RetentionRules(daily=-1)
    with pytest.raises(UsageError, match=r"--keep-within must not be negative"):
        RetentionRules(within=timedelta(seconds=-1))


def test_naive_times_are_rejected() -> None:
    naive = Point("naive", datetime(2026, 11, 20))

    with pytest.raises(ValueError, match="timezone-aware"):
        apply_retention([naive], RetentionRules(last=1), now=at(2026, 11, 21))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("35d", timedelta(days=35)),
        ("2w", timedelta(weeks=2)),
        ("1y", timedelta(days=365)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1y6d", timedelta(days=371)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "d", "12", "6mo", "1.5h", "-3d", "1 d", " 1d", "3D", "10x", "1d12", "\u0663d"],
)
def test_parse_duration_rejects_with_one_clear_line(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration(text)

    message = str(caught.value)
    assert repr(text) in message
    assert "units: s, m, h, d, w, y" in message
    assert "\n" not in message


def test_parse_duration_rejects_durations_timedelta_cannot_hold() -> None:
    with pytest.raises(UsageError, match="is too long"):
        parse_duration("99999999999y")


UNIT_SECONDS = {"s": 1, "m": 60, "h": 60 * 60, "d": 24 * 60 * 60, "w": 7 * 24 * 60 * 60}
UNIT_SECONDS["y"] = 365 * UNIT_SECONDS["d"]


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(UNIT_SECONDS))), min_size=1)
)
def test_parse_duration_sums_every_group(groups: list[tuple[int, str]]) -> None:
    text = "".join(f"{number}{unit}" for number, unit in groups)
    seconds = sum(number * UNIT_SECONDS[unit] for number, unit in groups)

    assert parse_duration(text) == timedelta(seconds=seconds)


# The oracle below restates the rules in a different shape from the module: instead of
# walking the points newest first, it groups them by a numeric bucket key, takes the N
# largest keys, and keeps the newest point of each.

BucketKey = Callable[[datetime], tuple[int, ...]]

ORACLE_BUCKETS: list[tuple[str, BucketKey, str]] = [
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour), "{:04d}-{:02d}-{:02d}-{:02d}"),
    ("daily", lambda t: (t.year, t.month, t.day), "{:04d}-{:02d}-{:02d}"),
    ("weekly", lambda t: tuple(t.isocalendar())[:2], "{:04d}-W{:02d}"),
    ("monthly", lambda t: (t.year, t.month), "{:04d}-{:02d}"),
    ("yearly", lambda t: (t.year,), "{:04d}"),
]


def rank(point: Point) -> tuple[datetime, str]:
    return (point.time, point.id)


def oracle(points: list[Point], rules: RetentionRules, now: datetime) -> dict[str, list[str]]:
    reasons: defaultdict[str, list[str]] = defaultdict(list)
    for point in heapq.nlargest(rules.last, points, key=rank):
        reasons[point.id].append("last")
    for name, key_of, label in ORACLE_BUCKETS:
        groups: defaultdict[tuple[int, ...], list[Point]] = defaultdict(list)
        for point in points:
            groups[key_of(point.time)].append(point)
        for key in sorted(groups, reverse=True)[: getattr(rules, name)]:
            reasons[max(groups[key], key=rank).id].append(f"{name} {label.format(*key)}")
    if rules.within is not None:
        cutoff = now - rules.within
        for point in points:
            if point.time >= cutoff:
                reasons[point.id].append("within")
    return dict(reasons)


# Times cluster around an ISO-year boundary and a leap day as well as spreading over years,
# so that hours, days and weeks are shared often enough to matter.
ANCHORS = [at(2020, 12, 31, 23), at(2024, 2, 29, 12), at(2026, 11, 20, 6)]
clustered = st.builds(
    lambda anchor, minutes: anchor + timedelta(minutes=minutes),
    st.sampled_from(ANCHORS),
    st.integers(-10 * 24 * 60, 10 * 24 * 60),
)
spread = st.datetimes(
    min_value=datetime(2018, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
)
moments = st.one_of(clustered, spread)


@st.composite
def point_lists(draw: st.DrawFn) -> list[Point]:
    # Drawing from a small pool repeats identical times, which exercises the id tie-break.
    pool = draw(st.lists(moments, min_size=1, max_size=12))
    times = draw(st.lists(st.sampled_from(pool), max_size=40))
    return [Point(f"p{i:02d}", time) for i, time in enumerate(times)]


counts = st.integers(0, 6)
rule_sets = st.builds(
    RetentionRules,
    last=counts,
    hourly=counts,
    daily=counts,
    weekly=counts,
    monthly=counts,
    yearly=counts,
    within=st.none() | st.builds(timedelta, minutes=st.integers(0, 5 * 365 * 24 * 60)),
).filter(lambda rules: not rules.is_empty())


@settings(max_examples=500, deadline=None)
@given(point_lists(), rule_sets, moments)
def test_apply_retention_agrees_with_the_oracle(
    points: list[Point], rules: RetentionRules, now: datetime
) -> None:
    decision = apply_retention(points, rules, now)

    assert decision.reasons == oracle(points, rules, now)


@settings(deadline=None)
@given(point_lists(), rule_sets, moments)
def test_keep_and_remove_partition_the_input_newest_first(
    points: list[Point], rules: RetentionRules, now: datetime
) -> None:
    decision = apply_retention(points, rules, now)

    assert sorted(ids(decision.keep + decision.remove)) == sorted(ids(points))
    assert set(ids(decision.keep)) == set(decision.reasons)
    for side in (decision.keep, decision.remove):
        assert [rank(p) for p in side] == sorted((rank(p) for p in side), reverse=True)


@settings(deadline=None)
@given(point_lists(), rule_sets, moments)
def test_something_is_kept_whenever_a_count_rule_is_set(
    points: list[Point], rules: RetentionRules, now: datetime
) -> None:
    counts = (rules.last, rules.hourly, rules.daily, rules.weekly, rules.monthly, rules.yearly)
    assume(points and any(counts))

    assert apply_retention(points, rules, now).keep


@settings(deadline=None)
@given(point_lists(), rule_sets, moments, st.randoms(use_true_random=False))
def test_decision_does_not_depend_on_input_order(
    points: list[Point], rules: RetentionRules, now: datetime, rng: random.Random
) -> None:
    shuffled = list(points)
    rng.shuffle(shuffled)

    assert apply_retention(shuffled, rules, now) == apply_retention(points, rules, now)
