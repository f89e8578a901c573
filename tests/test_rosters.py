"""Rosters: shift windows, overrides, shift ends, coverage gaps, hand-offs and the roster API.

Every expected instant below is worked out by hand and written in UTC, with the local time it
stands for in a comment. Reference week: Monday 2026-03-09 .. Sunday 2026-03-15.
Asia/Singapore is UTC+8 and Asia/Tokyo UTC+9 all year; Europe/Dublin is UTC+0 until
2026-03-29 01:00 UTC and UTC+1 from then until 2026-10-25 01:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from db.assignment import claim_agent, claim_best_agent, hand_off, shift_end_of
from db.rosters import add_override
from domain.enums import Priority
from domain.rosters import (
    SHIFT_LOOKAHEAD,
    OverrideKind,
    RosterOverrideFields,
    Shift,
    coverage_gaps,
    on_shift,
    shift_end,
    shift_windows,
)
from tests.conftest import ALWAYS, add_agent, add_customer, saved_ticket

SG = "Asia/Singapore"
DUBLIN = "Europe/Dublin"
OFFICE = Shift(days=[1, 2, 3, 4, 5], start=time(8), end=time(17))  # 08:00-17:00 SGT = 00:00-09:00 UTC
WEEK_START = datetime(2026, 3, 9, tzinfo=UTC)  # Monday 00:00 UTC (08:00 SGT)
WEEK_END = datetime(2026, 3, 16, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def off(start: datetime, end: datetime, reason: str | None = None) -> RosterOverrideFields:
    return RosterOverrideFields(kind=OverrideKind.OFF, starts_at=start, ends_at=end, reason=reason)


def extra(start: datetime, end: datetime) -> RosterOverrideFields:
    return RosterOverrideFields(kind=OverrideKind.EXTRA, starts_at=start, ends_at=end)


def office_week(*days: int) -> list[tuple[datetime, datetime]]:
    """The office shift on the given days of March 2026: 00:00-09:00 UTC each."""
    return [(utc(2026, 3, d, 0), utc(2026, 3, d, 9)) for d in days]


# --- shift_windows ------------------------------------------------------------------------------


def test_weekly_shift_in_singapore_is_eight_hours_ahead_of_utc():
    assert shift_windows(OFFICE, SG, [], WEEK_START, WEEK_END) == office_week(9, 10, 11, 12, 13)


def test_windows_are_clipped_to_the_span():
    # Tuesday 12:00 SGT (04:00 UTC) .. Wednesday 10:00 SGT (02:00 UTC)
    assert shift_windows(OFFICE, SG, [], utc(2026, 3, 10, 4), utc(2026, 3, 11, 2)) == [
        (utc(2026, 3, 10, 4), utc(2026, 3, 10, 9)),
        (utc(2026, 3, 11, 0), utc(2026, 3, 11, 2)),
    ]
    assert shift_windows(OFFICE, SG, [], utc(2026, 3, 14), utc(2026, 3, 16)) == []  # the weekend


def test_overnight_shift_runs_past_midnight_and_its_tail_reaches_the_next_span():
    nights = Shift(days=[4, 5], start=time(22), end=time(6))  # Thu and Fri 22:00 SGT -> 06:00 SGT
    assert shift_windows(nights, SG, [], WEEK_START, WEEK_END) == [
        (utc(2026, 3, 12, 14), utc(2026, 3, 12, 22)),  # Thu 22:00 SGT .. Fri 06:00 SGT
        (utc(2026, 3, 13, 14), utc(2026, 3, 13, 22)),  # Fri 22:00 SGT .. Sat 06:00 SGT
    ]
    sunday_night = Shift(days=[7], start=time(22), end=time(6))
    # A span opening Monday 00:00 SGT sees the tail of Sunday night's shift.
    assert shift_windows(sunday_night, SG, [], utc(2026, 3, 8, 16), utc(2026, 3, 9, 16)) == [
        (utc(2026, 3, 8, 16), utc(2026, 3, 8, 22))  # Mon 00:00 .. 06:00 SGT
    ]


def test_off_override_cuts_a_sick_afternoon_out_of_the_shift():
    sick = off(utc(2026, 3, 11, 5), utc(2026, 3, 11, 9), "sick")  # Wed 13:00 .. 17:00 SGT
    assert shift_windows(OFFICE, SG, [sick], WEEK_START, WEEK_END) == [
        *office_week(9, 10),
        (utc(2026, 3, 11, 0), utc(2026, 3, 11, 5)),
        *office_week(12, 13),
    ]
    dentist = off(utc(2026, 3, 11, 4), utc(2026, 3, 11, 6))  # Wed 12:00 .. 14:00 SGT: a hole
    assert shift_windows(OFFICE, SG, [dentist], utc(2026, 3, 11), utc(2026, 3, 12)) == [
        (utc(2026, 3, 11, 0), utc(2026, 3, 11, 4)),
        (utc(2026, 3, 11, 6), utc(2026, 3, 11, 9)),
    ]


def test_off_override_covering_the_whole_day_and_beyond_the_span_removes_it():
    week_off = off(utc(2026, 3, 1), utc(2026, 3, 12))  # until Thu 08:00 SGT
    assert shift_windows(OFFICE, SG, [week_off], WEEK_START, WEEK_END) == office_week(12, 13)


def test_extra_override_adds_saturday_cover_and_is_clipped_to_the_span():
    saturday = extra(utc(2026, 3, 14, 2), utc(2026, 3, 14, 6))  # Sat 10:00 .. 14:00 SGT
    assert shift_windows(OFFICE, SG, [saturday], WEEK_START, WEEK_END) == [
        *office_week(9, 10, 11, 12, 13),
        (utc(2026, 3, 14, 2), utc(2026, 3, 14, 6)),
    ]
    assert shift_windows(OFFICE, SG, [saturday], utc(2026, 3, 14, 3), utc(2026, 3, 14, 4)) == [
        (utc(2026, 3, 14, 3), utc(2026, 3, 14, 4))
    ]
    assert shift_windows(OFFICE, SG, [saturday], utc(2026, 3, 14, 6), utc(2026, 3, 14, 8)) == []


def test_extra_override_in_another_zone_means_the_same_instants():
    tokyo = ZoneInfo("Asia/Tokyo")
    saturday = extra(datetime(2026, 3, 14, 11, tzinfo=tokyo), datetime(2026, 3, 14, 15, tzinfo=tokyo))
    assert shift_windows(OFFICE, SG, [saturday], utc(2026, 3, 14), utc(2026, 3, 15)) == [
        (utc(2026, 3, 14, 2), utc(2026, 3, 14, 6))
    ]


def test_overlapping_overrides_of_one_kind_merge():
    # Thu: off 09:00-12:00 and 11:00-15:00 SGT -> one hole 09:00-15:00 SGT (01:00-07:00 UTC)
    # Fri: extra 16:00-19:00 and 18:00-20:00 SGT -> the shift runs on to 20:00 SGT (12:00 UTC)
    overrides = [
        off(utc(2026, 3, 12, 1), utc(2026, 3, 12, 4)),
        off(utc(2026, 3, 12, 3), utc(2026, 3, 12, 7)),
        extra(utc(2026, 3, 13, 8), utc(2026, 3, 13, 11)),
        extra(utc(2026, 3, 13, 10), utc(2026, 3, 13, 12)),
    ]
    assert shift_windows(OFFICE, SG, overrides, utc(2026, 3, 12), utc(2026, 3, 14)) == [
        (utc(2026, 3, 12, 0), utc(2026, 3, 12, 1)),
        (utc(2026, 3, 12, 7), utc(2026, 3, 12, 9)),
        (utc(2026, 3, 13, 0), utc(2026, 3, 13, 12)),
    ]


def test_time_off_wins_over_overlapping_extra_cover():
    # Sick leave is absolute: extra cover rostered inside it does not put the agent on shift.
    overrides = [
        off(utc(2026, 3, 9), utc(2026, 3, 16)),  # the whole week off
        extra(utc(2026, 3, 11, 2), utc(2026, 3, 11, 4)),  # Wed 10:00-12:00 SGT
    ]
    assert shift_windows(OFFICE, SG, overrides, WEEK_START, WEEK_END) == []


def test_no_weekly_days_only_extra_cover():
    on_call = Shift(days=[], start=time(8), end=time(17))
    saturday = extra(utc(2026, 3, 14, 2), utc(2026, 3, 14, 6))
    assert shift_windows(on_call, SG, [], WEEK_START, WEEK_END) == []
    assert shift_windows(on_call, SG, [saturday], WEEK_START, WEEK_END) == [
        (utc(2026, 3, 14, 2), utc(2026, 3, 14, 6))
    ]
    assert not on_shift(on_call, SG, [saturday], utc(2026, 3, 14, 1, 59))
    assert on_shift(on_call, SG, [saturday], utc(2026, 3, 14, 2))
    assert shift_end(on_call, SG, [saturday], utc(2026, 3, 14, 3)) == utc(2026, 3, 14, 6)


def test_dublin_spring_forward_shortens_the_night_shift():
    # 00:00-04:00 local, Sat/Sun/Mon. Sun 2026-03-29 jumps 01:00 GMT -> 02:00 IST.
    shift = Shift(days=[6, 7, 1], start=time(0), end=time(4))
    assert shift_windows(shift, DUBLIN, [], utc(2026, 3, 27), utc(2026, 3, 31)) == [
        (utc(2026, 3, 28, 0), utc(2026, 3, 28, 4)),  # Sat 00:00-04:00 GMT: 4 hours
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 3)),  # Sun 00:00 GMT - 04:00 IST: 3 hours
        (utc(2026, 3, 29, 23), utc(2026, 3, 30, 3)),  # Mon 00:00-04:00 IST: 4 hours
    ]
    assert shift_end(shift, DUBLIN, [], utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 3)
    assert on_shift(shift, DUBLIN, [], utc(2026, 3, 29, 2, 59))
    assert not on_shift(shift, DUBLIN, [], utc(2026, 3, 29, 3))  # 04:00 IST


def test_dublin_fall_back_lengthens_the_night_shift():
    # Sun 2026-10-25 falls back 02:00 IST -> 01:00 GMT.
    shift = Shift(days=[6, 7, 1], start=time(0), end=time(4))
    assert shift_windows(shift, DUBLIN, [], utc(2026, 10, 23), utc(2026, 10, 27)) == [
        (utc(2026, 10, 23, 23), utc(2026, 10, 24, 3)),  # Sat 00:00-04:00 IST
        (utc(2026, 10, 24, 23), utc(2026, 10, 25, 4)),  # Sun 00:00 IST - 04:00 GMT: 5 hours
        (utc(2026, 10, 26, 0), utc(2026, 10, 26, 4)),  # Mon 00:00-04:00 GMT
    ]


# --- on_shift and shift_end -----------------------------------------------------------------------


def test_shift_end_is_the_end_of_todays_shift():
    at = utc(2026, 3, 9, 3)  # Mon 11:00 SGT
    assert on_shift(OFFICE, SG, [], at)
    assert shift_end(OFFICE, SG, [], at) == utc(2026, 3, 9, 9)  # 17:00 SGT


def test_shift_is_half_open():
    assert on_shift(OFFICE, SG, [], utc(2026, 3, 9, 0))  # 08:00 SGT sharp
    assert shift_end(OFFICE, SG, [], utc(2026, 3, 9, 0)) == utc(2026, 3, 9, 9)
    assert on_shift(OFFICE, SG, [], utc(2026, 3, 9, 8, 59, 59))
    assert not on_shift(OFFICE, SG, [], utc(2026, 3, 9, 9))  # 17:00 SGT sharp
    assert not on_shift(OFFICE, SG, [], utc(2026, 3, 8, 23, 59, 59))


def test_off_shift_returns_at_itself():
    for at in [utc(2026, 3, 9, 10), utc(2026, 3, 14, 3), utc(2026, 3, 9, 9)]:
        assert not on_shift(OFFICE, SG, [], at)
        assert shift_end(OFFICE, SG, [], at) == at


def test_a_24_7_shift_never_ends():
    at = utc(2026, 3, 11, 13, 37)
    assert on_shift(ALWAYS, SG, [], at)
    assert shift_end(ALWAYS, SG, [], at) is None
    assert shift_end(ALWAYS, DUBLIN, [], utc(2026, 3, 28, 12)) is None  # across the DST change
    # Leave far beyond the lookahead does not matter; leave inside it does.
    later = off(at + SHIFT_LOOKAHEAD + timedelta(hours=1), at + SHIFT_LOOKAHEAD + timedelta(days=2))
    assert shift_end(ALWAYS, SG, [later], at) is None
    soon = off(utc(2026, 3, 14, 0), utc(2026, 3, 15, 0))
    assert shift_end(ALWAYS, SG, [soon], at) == utc(2026, 3, 14, 0)


def test_a_24_hour_weekday_shift_ends_at_saturday_midnight_local():
    weekdays = Shift(days=[1, 2, 3, 4, 5], start=time(0), end=time(0))
    # Fri 2026-03-13 12:00 SGT -> Sat 00:00 SGT = Fri 16:00 UTC
    assert shift_end(weekdays, SG, [], utc(2026, 3, 13, 4)) == utc(2026, 3, 13, 16)
    # Mon 2026-03-09 -> the week runs on without a break until Sat 00:00 SGT
    assert shift_end(weekdays, SG, [], utc(2026, 3, 9, 4)) == utc(2026, 3, 13, 16)


def test_overnight_shift_ends_the_next_morning():
    nights = Shift(days=[5], start=time(22), end=time(6))
    # Fri 23:00 SGT -> Sat 06:00 SGT
    assert shift_end(nights, SG, [], utc(2026, 3, 13, 15)) == utc(2026, 3, 13, 22)
    # Sat 05:00 SGT, the tail -> Sat 06:00 SGT
    assert shift_end(nights, SG, [], utc(2026, 3, 13, 21)) == utc(2026, 3, 13, 22)


def test_adjacent_extra_override_extends_the_shift():
    overtime = extra(utc(2026, 3, 9, 9), utc(2026, 3, 9, 11))  # Mon 17:00 .. 19:00 SGT
    at = utc(2026, 3, 9, 3)
    assert shift_end(OFFICE, SG, [overtime], at) == utc(2026, 3, 9, 11)
    assert on_shift(OFFICE, SG, [overtime], utc(2026, 3, 9, 10))
    assert shift_end(OFFICE, SG, [overtime], utc(2026, 3, 9, 10)) == utc(2026, 3, 9, 11)
    # Two adjacent extras chain: the shift runs on until the last one ends.
    more = extra(utc(2026, 3, 9, 11), utc(2026, 3, 9, 12))
    assert shift_end(OFFICE, SG, [more, overtime], at) == utc(2026, 3, 9, 12)
    # An extra override that does not touch the shift does not extend it.
    evening = extra(utc(2026, 3, 9, 10), utc(2026, 3, 9, 12))  # Mon 18:00 .. 20:00 SGT
    assert shift_end(OFFICE, SG, [evening], at) == utc(2026, 3, 9, 9)


def test_off_override_starting_mid_shift_ends_the_shift_at_its_start():
    sick = off(utc(2026, 3, 9, 7), utc(2026, 3, 10, 2))  # Mon 15:00 SGT .. Tue 10:00 SGT
    at = utc(2026, 3, 9, 3)
    assert shift_end(OFFICE, SG, [sick], at) == utc(2026, 3, 9, 7)
    assert not on_shift(OFFICE, SG, [sick], utc(2026, 3, 9, 8))
    assert shift_end(OFFICE, SG, [sick], utc(2026, 3, 9, 8)) == utc(2026, 3, 9, 8)
    assert on_shift(OFFICE, SG, [sick], utc(2026, 3, 10, 2))
    assert shift_end(OFFICE, SG, [sick], utc(2026, 3, 10, 2)) == utc(2026, 3, 10, 9)


def test_extra_cover_longer_than_the_lookahead_counts_as_never_ending():
    on_call = Shift(days=[], start=time(8), end=time(17))
    at = utc(2026, 3, 9, 12)
    week = extra(at - timedelta(hours=1), at + timedelta(days=7))
    fortnight = extra(at - timedelta(hours=1), at + timedelta(days=14))
    assert shift_end(on_call, SG, [week], at) == utc(2026, 3, 16, 12)
    assert shift_end(on_call, SG, [fortnight], at) is None


# --- coverage_gaps --------------------------------------------------------------------------------


def test_coverage_gaps_take_the_union_of_several_agents():
    day = utc(2026, 3, 9)
    ana = [(utc(2026, 3, 9, 2), utc(2026, 3, 9, 6))]
    bea = [(utc(2026, 3, 9, 5), utc(2026, 3, 9, 9)), (utc(2026, 3, 9, 15), utc(2026, 3, 9, 16))]
    cy = [(utc(2026, 3, 9, 9), utc(2026, 3, 9, 11))]  # touches bea's end: no zero-length gap
    assert coverage_gaps([ana, bea, cy], day, day + timedelta(days=1)) == [
        (utc(2026, 3, 9, 0), utc(2026, 3, 9, 2)),  # before anybody starts
        (utc(2026, 3, 9, 11), utc(2026, 3, 9, 15)),
        (utc(2026, 3, 9, 16), utc(2026, 3, 10, 0)),  # after everybody left
    ]


def test_coverage_gaps_edges_and_extremes():
    start, end = utc(2026, 3, 9, 0), utc(2026, 3, 10, 0)
    assert coverage_gaps([], start, end) == [(start, end)]
    assert coverage_gaps([[], []], start, end) == [(start, end)]
    assert coverage_gaps([[(start, end)]], start, end) == []
    # Covered at both edges: a single gap in the middle.
    assert coverage_gaps([[(start, utc(2026, 3, 9, 8))], [(utc(2026, 3, 9, 20), end)]], start, end) == [
        (utc(2026, 3, 9, 8), utc(2026, 3, 9, 20))
    ]


def test_coverage_gaps_of_real_shifts():
    singapore = shift_windows(OFFICE, SG, [], utc(2026, 3, 9), utc(2026, 3, 10))
    dublin = shift_windows(OFFICE, DUBLIN, [], utc(2026, 3, 9), utc(2026, 3, 10))  # 08:00-17:00 GMT
    assert coverage_gaps([singapore, dublin], utc(2026, 3, 9), utc(2026, 3, 10)) == [
        (utc(2026, 3, 9, 17), utc(2026, 3, 10, 0))
    ]


# --- RosterOverrideFields validation --------------------------------------------------------------


def test_override_must_end_after_it_starts():
    with pytest.raises(ValidationError, match="ends_at must be after starts_at"):
        off(utc(2026, 3, 9, 10), utc(2026, 3, 9, 9))
    with pytest.raises(ValidationError, match="ends_at must be after starts_at"):
        off(utc(2026, 3, 9, 10), utc(2026, 3, 9, 10))


def test_override_spans_at_most_120_days():
    start = utc(2026, 3, 9)
    assert extra(start, start + timedelta(days=120)).ends_at == utc(2026, 7, 7)
    with pytest.raises(ValidationError, match="at most 120 days"):
        extra(start, start + timedelta(days=120, seconds=1))


def test_override_needs_aware_datetimes_and_plain_text():
    with pytest.raises(ValidationError):
        RosterOverrideFields(kind="off", starts_at=datetime(2026, 3, 9, 9), ends_at=utc(2026, 3, 9, 17))
    with pytest.raises(ValidationError):
        RosterOverrideFields(kind="off", starts_at="2026-03-09T09:00:00", ends_at="2026-03-09T17:00:00Z")
    with pytest.raises(ValidationError):
        RosterOverrideFields(kind="holiday", starts_at=utc(2026, 3, 9), ends_at=utc(2026, 3, 10))
    with pytest.raises(ValidationError):
        off(utc(2026, 3, 9), utc(2026, 3, 10), reason="sick\x00")
    with pytest.raises(ValidationError):
        off(utc(2026, 3, 9), utc(2026, 3, 10), reason="x" * 501)
    parsed = RosterOverrideFields.model_validate(
        {"kind": "off", "starts_at": "2026-03-09T09:00:00+08:00", "ends_at": "2026-03-09T17:00:00+08:00"}
    )
    assert parsed.kind is OverrideKind.OFF
    assert parsed.starts_at == utc(2026, 3, 9, 1)


# --- properties -----------------------------------------------------------------------------------

ZONES = st.sampled_from([SG, DUBLIN, "America/New_York", "Asia/Tokyo"])
CLOCK = st.builds(time, st.integers(0, 23), st.sampled_from([0, 30]))
SHIFTS = st.builds(Shift, days=st.lists(st.integers(1, 7), unique=True, max_size=7), start=CLOCK, end=CLOCK)
BASE = utc(2026, 3, 1)


@st.composite
def overrides(draw) -> RosterOverrideFields:
    start = BASE + timedelta(hours=draw(st.integers(0, 24 * 30)))
    length = timedelta(hours=draw(st.integers(1, 24 * 5)))
    kind = draw(st.sampled_from(list(OverrideKind)))
    return RosterOverrideFields(kind=kind, starts_at=start, ends_at=start + length)


@settings(max_examples=300, deadline=None)
@given(SHIFTS, ZONES, st.lists(overrides(), max_size=4), st.integers(0, 24 * 60 * 25))
def test_shift_end_agrees_with_on_shift(shift, zone, overs, minutes):
    at = BASE + timedelta(minutes=minutes)
    end = shift_end(shift, zone, overs, at)
    if not on_shift(shift, zone, overs, at):
        assert end == at
    elif end is None:
        assert shift_windows(shift, zone, overs, at, at + SHIFT_LOOKAHEAD) == [(at, at + SHIFT_LOOKAHEAD)]
    else:
        assert shift_windows(shift, zone, overs, at, end) == [(at, end)]
        assert not on_shift(shift, zone, overs, end)


@settings(max_examples=300, deadline=None)
@given(SHIFTS, ZONES, st.lists(overrides(), max_size=4), st.integers(0, 24 * 20), st.integers(1, 24 * 10))
def test_windows_and_gaps_partition_the_span(shift, zone, overs, offset, hours):
    start = BASE + timedelta(hours=offset)
    end = start + timedelta(hours=hours)
    windows = shift_windows(shift, zone, overs, start, end)
    for w_start, w_end in windows:
        assert start <= w_start < w_end <= end
    for (_, earlier_end), (later_start, _) in pairwise(windows):
        assert earlier_end < later_start  # sorted, disjoint, not even touching
    gaps = coverage_gaps([windows], start, end)
    pieces = sorted(windows + gaps)
    assert pieces[0][0] == start and pieces[-1][1] == end
    for (_, earlier_end), (later_start, _) in pairwise(pieces):
        assert earlier_end == later_start


@settings(max_examples=300, deadline=None)
@given(SHIFTS, st.sampled_from([SG, "Asia/Tokyo"]), st.integers(0, 24 * 60 * 40))
def test_shift_covers_agrees_with_on_shift_without_dst(shift, zone, minutes):
    at = BASE + timedelta(minutes=minutes)
    if shift.start == shift.end and shift.start != time(0):
        return  # see test_24_hour_shift_not_starting_at_midnight_covers_like_the_roster
    assert shift.covers(at, ZoneInfo(zone)) == on_shift(shift, zone, [], at)


def test_24_hour_shift_not_starting_at_midnight_covers_like_the_roster():
    # BUG (domain/rosters.py, Shift.covers, the `start == end` branch): covers() treats the shift as
    # the whole calendar day 00:00-24:00, while the roster (shift_windows / on_shift, through the
    # business calendar) and Shift's own docstring ("end <= start runs past midnight") make it the
    # 24 hours from `start`. Wed 09:00 -> Thu 09:00 SGT; Thu 08:00 SGT is inside it.
    shift = Shift(days=[3], start=time(9), end=time(9))
    thursday_morning = utc(2026, 3, 12, 0)  # Thu 08:00 SGT
    wednesday_early = utc(2026, 3, 10, 17)  # Wed 01:00 SGT
    assert on_shift(shift, SG, [], thursday_morning)
    assert not on_shift(shift, SG, [], wednesday_early)
    assert shift.covers(thursday_morning, ZoneInfo(SG)) is True
    assert shift.covers(wednesday_early, ZoneInfo(SG)) is False


# --- the database ---------------------------------------------------------------------------------

AT = utc(2026, 3, 9, 12)  # Mon 12:00 GMT in Dublin (region emea)
WORKDAY = Shift(days=[1, 2, 3, 4, 5], start=time(8), end=time(17))  # in emea: 08:00-17:00 UTC in March


async def new_ticket(pool: asyncpg.Pool, customer_id: str = "acme") -> int:
    return (await saved_ticket(pool, customer_id, body="Help: please", created_at=utc(2026, 3, 9, 11)))["id"]


async def override(pool: asyncpg.Pool, agent_id: str, fields: RosterOverrideFields) -> None:
    async with pool.acquire() as conn:
        await add_override(conn, agent_id, fields)


async def claim_best(conn: asyncpg.Connection, ticket_id: int, at: datetime = AT):
    return await claim_best_agent(
        conn,
        ticket_id=ticket_id,
        language="en",
        module="billing",
        priority=Priority.P3,
        home_region="emea",
        at=at,
        queued_since=at,
    )


async def hand_over(conn: asyncpg.Connection, ticket_id: int, *, at: datetime, lead: timedelta):
    return await hand_off(
        conn,
        ticket_id=ticket_id,
        from_agent_id="ana",
        language="en",
        module="billing",
        priority=Priority.P2,
        home_region="emea",
        at=at,
        lead=lead,
    )


async def load_of(conn: asyncpg.Connection, agent_id: str) -> int:
    return await conn.fetchval("SELECT load FROM agents WHERE id = $1", agent_id)


async def claimant(conn: asyncpg.Connection, ticket_id: int) -> str | None:
    return await conn.fetchval("SELECT agent_id FROM agent_claims WHERE ticket_id = $1", ticket_id)


async def test_claim_best_agent_skips_an_agent_who_is_off(db: asyncpg.Pool):
    await add_customer(db, "acme")
    # bea would win on skill; she is sick today.
    await add_agent(db, "ana", skills={"billing": 2})
    await add_agent(db, "bea", skills={"billing": 5})
    await override(db, "bea", off(utc(2026, 3, 9, 8), utc(2026, 3, 9, 17), "sick"))
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        outcome = await claim_best(conn, ticket)
        assert outcome.agent is not None and outcome.agent.id == "ana"
        assert await load_of(conn, "bea") == 0


async def test_claim_best_agent_picks_an_agent_whose_leave_is_elsewhere_in_time(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "ana", skills={"billing": 2})
    await add_agent(db, "bea", skills={"billing": 5}, shift=WORKDAY)
    await override(db, "bea", off(utc(2026, 3, 10, 8), utc(2026, 3, 10, 17)))  # tomorrow
    await override(db, "bea", off(utc(2026, 3, 6, 8), utc(2026, 3, 6, 17)))  # last Friday
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        outcome = await claim_best(conn, ticket)
        assert outcome.agent is not None and outcome.agent.id == "bea"
        assert outcome.agent.shift_ends_at == utc(2026, 3, 9, 17)


async def test_claim_best_agent_takes_an_agent_on_extra_cover(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "bea", shift=WORKDAY)
    saturday = utc(2026, 3, 14, 12)
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        assert (await claim_best(conn, ticket, at=saturday)).queued
    await override(db, "bea", extra(utc(2026, 3, 14, 10), utc(2026, 3, 14, 14)))
    async with db.acquire() as conn:
        outcome = await claim_best(conn, ticket, at=saturday)
        assert outcome.agent is not None and outcome.agent.id == "bea"
        assert outcome.agent.shift_ends_at == utc(2026, 3, 14, 14)


async def test_shift_end_of_returns_the_end_of_the_current_window(db: asyncpg.Pool):
    await add_agent(db, "bea", shift=WORKDAY)
    await add_agent(db, "cy")  # 24/7
    async with db.acquire() as conn:
        ref = await shift_end_of(conn, "bea", AT)
        assert ref is not None
        assert (ref.id, ref.name, ref.region) == ("bea", "Bea", "emea")
        assert ref.shift_ends_at == utc(2026, 3, 9, 17)
        assert (await shift_end_of(conn, "bea", utc(2026, 3, 9, 18))).shift_ends_at == utc(2026, 3, 9, 18)
        assert (await shift_end_of(conn, "cy", AT)).shift_ends_at is None
        assert await shift_end_of(conn, "nobody", AT) is None
    await override(db, "bea", extra(utc(2026, 3, 9, 17), utc(2026, 3, 9, 19)))
    await override(db, "bea", off(utc(2026, 3, 9, 16), utc(2026, 3, 9, 16, 30)))
    async with db.acquire() as conn:
        assert (await shift_end_of(conn, "bea", AT)).shift_ends_at == utc(2026, 3, 9, 16)
        # 16:30 .. 17:00 of the shift runs on into the overtime until 19:00
        assert (await shift_end_of(conn, "bea", utc(2026, 3, 9, 16, 45))).shift_ends_at == utc(2026, 3, 9, 19)
        assert (await shift_end_of(conn, "bea", utc(2026, 3, 9, 16, 15))).shift_ends_at == utc(
            2026, 3, 9, 16, 15
        )
    await override(db, "cy", off(utc(2026, 3, 11), utc(2026, 3, 12)))
    async with db.acquire() as conn:
        assert (await shift_end_of(conn, "cy", AT)).shift_ends_at == utc(2026, 3, 11)


async def _ana_holds_a_ticket(db: asyncpg.Pool) -> int:
    await add_customer(db, "acme")
    await add_agent(db, "ana")  # 24/7, but handing the ticket off
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim_agent(conn, ticket_id=ticket, agent_id="ana")
        assert await load_of(conn, "ana") == 1
    return ticket


async def test_hand_off_moves_the_ticket_to_an_agent_who_stays_long_enough(db: asyncpg.Pool):
    ticket = await _ana_holds_a_ticket(db)
    await add_agent(db, "bea", shift=WORKDAY)
    async with db.acquire() as conn:
        outcome = await hand_over(conn, ticket, at=AT, lead=timedelta(minutes=30))
        assert not outcome.queued
        assert outcome.agent is not None and outcome.agent.id == "bea"
        assert outcome.agent.shift_ends_at == utc(2026, 3, 9, 17)
        assert await claimant(conn, ticket) == "bea"
        assert (await load_of(conn, "ana"), await load_of(conn, "bea")) == (0, 1)
        assert await conn.fetchval("SELECT count(*) FROM ticket_queue") == 0

        again = await hand_over(conn, ticket, at=AT, lead=timedelta(minutes=30))
        assert again.agent is not None and again.agent.id == "bea"
        assert again.reason == "already handed off"
        assert again.agent.shift_ends_at == utc(2026, 3, 9, 17)
        assert not again.queued
        assert (await load_of(conn, "ana"), await load_of(conn, "bea")) == (0, 1)
        assert await conn.fetchval("SELECT count(*) FROM agent_claims") == 1


async def test_hand_off_refuses_an_agent_whose_shift_ends_within_the_lead(db: asyncpg.Pool):
    ticket = await _ana_holds_a_ticket(db)
    await add_agent(db, "bea", shift=WORKDAY)
    at = utc(2026, 3, 9, 16, 45)  # bea leaves at 17:00, inside the 30 minutes
    async with db.acquire() as conn:
        outcome = await hand_over(conn, ticket, at=at, lead=timedelta(minutes=30))
        assert outcome.queued and outcome.agent is None
        assert "coverage gap" in outcome.reason
        queued = await conn.fetchrow("SELECT * FROM ticket_queue WHERE ticket_id = $1", ticket)
        assert queued is not None
        assert (queued["language"], queued["module"], queued["priority"]) == ("en", "billing", "P2")
        assert queued["home_region"] == "emea"
        assert queued["queued_at"] == at
        assert await claimant(conn, ticket) is None
        assert (await load_of(conn, "ana"), await load_of(conn, "bea")) == (0, 0)


async def test_hand_off_lead_boundary_and_overrides(db: asyncpg.Pool):
    ticket = await _ana_holds_a_ticket(db)
    await add_agent(db, "bea", shift=WORKDAY)
    lead = timedelta(minutes=30)
    async with db.acquire() as conn:
        # bea ends exactly at at + lead: not long enough.
        assert (await hand_over(conn, ticket, at=utc(2026, 3, 9, 16, 30), lead=lead)).queued
        await claim_agent(conn, ticket_id=ticket, agent_id="ana")
    # Overtime until 19:00 makes her stay long enough at 16:45.
    await override(db, "bea", extra(utc(2026, 3, 9, 17), utc(2026, 3, 9, 19)))
    async with db.acquire() as conn:
        outcome = await hand_over(conn, ticket, at=utc(2026, 3, 9, 16, 45), lead=lead)
        assert outcome.agent is not None and outcome.agent.id == "bea"
        assert outcome.agent.shift_ends_at == utc(2026, 3, 9, 19)


async def test_hand_off_refuses_an_agent_whose_leave_starts_within_the_lead(db: asyncpg.Pool):
    ticket = await _ana_holds_a_ticket(db)
    await add_agent(db, "bea")  # 24/7 ...
    await override(db, "bea", off(utc(2026, 3, 9, 12, 20), utc(2026, 3, 9, 15)))  # ... but out at 12:20
    async with db.acquire() as conn:
        outcome = await hand_over(conn, ticket, at=AT, lead=timedelta(minutes=30))
        assert outcome.queued
        assert await load_of(conn, "ana") == 0


# --- the API --------------------------------------------------------------------------------------


def agent_body(
    agent_id: str,
    *,
    region: str = "emea",
    languages: list[dict] | None = None,
    skills: dict[str, int] | None = None,
    shift: Shift = ALWAYS,
    active: bool = True,
) -> dict:
    return {
        "id": agent_id,
        "name": agent_id.title(),
        "region_id": region,
        "languages": languages or [{"code": "en", "level": "native"}],
        "skills": skills or {"general": 3, "billing": 4, "api": 3},
        "capacity": 5,
        "shift": shift.model_dump(mode="json"),
        "active": active,
    }


async def make_agent(api, agent_id: str, **kwargs) -> str:
    response = await api.http.post("/v1/agents", json=agent_body(agent_id, **kwargs), headers=api.admin)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_override_crud(api):
    token = await make_agent(api, "ana")
    url = "/v1/agents/ana/overrides"
    body = {
        "kind": "off",
        "starts_at": "2027-01-04T09:00:00+09:00",
        "ends_at": "2027-01-08T18:00:00+09:00",
        "reason": "holiday",
    }
    response = await api.http.post(url, json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["agent_id"] == "ana" and created["kind"] == "off" and created["reason"] == "holiday"
    assert parse(created["starts_at"]) == utc(2027, 1, 4, 0)
    assert parse(created["ends_at"]) == utc(2027, 1, 8, 9)

    # Overrides that are over are not listed.
    past = {"kind": "extra", "starts_at": "2026-03-14T10:00:00Z", "ends_at": "2026-03-14T14:00:00Z"}
    assert (await api.http.post(url, json=past, headers=api.admin)).status_code == 201

    listed = await api.http.get(url, headers=api.as_token(token))  # staff may read
    assert listed.status_code == 200
    assert [o["id"] for o in listed.json()] == [created["id"]]

    # An agent may not change the roster.
    assert (await api.http.post(url, json=body, headers=api.as_token(token))).status_code == 403
    assert (await api.http.delete(f"{url}/{created['id']}", headers=api.as_token(token))).status_code == 403

    first = await api.http.delete(f"{url}/{created['id']}", headers=api.admin)
    assert first.status_code == 200 and first.json() == {"id": created["id"]}
    assert (await api.http.delete(f"{url}/{created['id']}", headers=api.admin)).status_code == 404
    assert (await api.http.get(url, headers=api.admin)).json() == []
    assert (await api.http.delete(f"{url}/not-a-uuid", headers=api.admin)).status_code == 422


async def test_override_of_unknown_agent_or_with_a_bad_body(api):
    await make_agent(api, "ana")
    good = {"kind": "off", "starts_at": "2027-01-04T09:00:00Z", "ends_at": "2027-01-04T17:00:00Z"}
    response = await api.http.post("/v1/agents/ghost/overrides", json=good, headers=api.admin)
    assert response.status_code == 404
    bad_bodies = [
        {**good, "ends_at": "2027-01-04T08:00:00Z"},  # ends before it starts
        {**good, "ends_at": good["starts_at"]},  # empty
        {**good, "ends_at": "2027-05-04T09:00:01Z"},  # 120 days and a second
        {**good, "starts_at": "2027-01-04T09:00:00"},  # no offset
        {**good, "kind": "holiday"},
        {**good, "reason": "x" * 501},
        {"kind": "off", "starts_at": "2027-01-04T09:00:00Z"},
    ]
    for body in bad_bodies:
        response = await api.http.post("/v1/agents/ana/overrides", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
    assert (await api.http.get("/v1/agents/ana/overrides", headers=api.admin)).json() == []
    # Deleting another agent's override fails too.
    created = (await api.http.post("/v1/agents/ana/overrides", json=good, headers=api.admin)).json()
    await make_agent(api, "bea")
    response = await api.http.delete(f"/v1/agents/bea/overrides/{created['id']}", headers=api.admin)
    assert response.status_code == 404


async def test_listing_overrides_of_an_unknown_agent_is_404(api):
    # BUG (api/rosters.py, list_overrides): POST answers 404 for an unknown agent, but GET answers
    # 200 with an empty list, so a typo in the agent id looks like "no overrides".
    response = await api.http.get("/v1/agents/ghost/overrides", headers=api.admin)
    assert response.status_code == 404, response.text


async def _tokyo_roster(api) -> None:
    region = {"id": "tokyo", "name": "Tokyo", "timezone": "Asia/Tokyo"}
    assert (await api.http.post("/v1/regions", json=region, headers=api.admin)).status_code == 201
    ja = [{"code": "ja", "level": "native"}]
    weekdays_9_to_6 = Shift(days=[1, 2, 3, 4, 5], start=time(9), end=time(18))
    # kenji: Mon-Fri 09:00-18:00 JST = 00:00-09:00 UTC
    await make_agent(api, "kenji", region="tokyo", languages=ja, skills={"video": 3}, shift=weekdays_9_to_6)
    # mei: Mon-Fri 17:00-20:00 SGT = 09:00-12:00 UTC, right after kenji
    await make_agent(
        api,
        "mei",
        region="apac",
        languages=[{"code": "en", "level": "native"}, {"code": "ja", "level": "fluent"}],
        skills={"video": 2, "billing": 3},
        shift=Shift(days=[1, 2, 3, 4, 5], start=time(17), end=time(20)),
    )
    # Not qualified: no video skill, no Japanese, inactive.
    await make_agent(api, "emi", region="tokyo", languages=ja, skills={"billing": 3})
    await make_agent(api, "ana", skills={"video": 5})
    await make_agent(api, "yuki", region="tokyo", languages=ja, skills={"video": 5}, active=False)


COVERAGE = {
    "from": "2026-03-09T00:00:00+09:00",  # Sun 15:00 UTC
    "to": "2026-03-11T00:00:00+09:00",  # Tue 15:00 UTC
    "language": "ja",
    "skill": "video",
}


def gaps_of(response) -> list[tuple[datetime, datetime, float]]:
    return [(parse(g["start"]), parse(g["end"]), g["minutes"]) for g in response.json()["gaps"]]


async def test_coverage_lists_the_gaps_of_qualified_agents(api):
    await _tokyo_roster(api)
    response = await api.http.get("/v1/coverage", params=COVERAGE, headers=api.admin)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["agents"] == ["kenji", "mei"]
    assert (result["language"], result["skill"]) == ("ja", "video")
    assert parse(result["start"]) == utc(2026, 3, 8, 15)
    assert parse(result["end"]) == utc(2026, 3, 10, 15)
    assert gaps_of(response) == [
        (utc(2026, 3, 8, 15), utc(2026, 3, 9, 0), 540.0),  # Mon 00:00-09:00 JST
        (utc(2026, 3, 9, 12), utc(2026, 3, 10, 0), 720.0),  # Mon 21:00 JST - Tue 09:00 JST
        (utc(2026, 3, 10, 12), utc(2026, 3, 10, 15), 180.0),  # Tue 21:00-24:00 JST
    ]

    # kenji off Tue 13:00-15:00 JST (04:00-06:00 UTC): a new gap.
    sick = {"kind": "off", "starts_at": "2026-03-10T13:00:00+09:00", "ends_at": "2026-03-10T15:00:00+09:00"}
    assert (
        await api.http.post("/v1/agents/kenji/overrides", json=sick, headers=api.admin)
    ).status_code == 201
    response = await api.http.get("/v1/coverage", params=COVERAGE, headers=api.admin)
    assert gaps_of(response) == [
        (utc(2026, 3, 8, 15), utc(2026, 3, 9, 0), 540.0),
        (utc(2026, 3, 9, 12), utc(2026, 3, 10, 0), 720.0),
        (utc(2026, 3, 10, 4), utc(2026, 3, 10, 6), 120.0),
        (utc(2026, 3, 10, 12), utc(2026, 3, 10, 15), 180.0),
    ]

    # mei on extra cover Mon 21:00-23:30 JST (12:00-14:30 UTC) shortens the night gap.
    late = {"kind": "extra", "starts_at": "2026-03-09T12:00:00Z", "ends_at": "2026-03-09T14:30:00Z"}
    assert (await api.http.post("/v1/agents/mei/overrides", json=late, headers=api.admin)).status_code == 201
    response = await api.http.get("/v1/coverage", params=COVERAGE, headers=api.admin)
    assert gaps_of(response)[1] == (utc(2026, 3, 9, 14, 30), utc(2026, 3, 10, 0), 570.0)


async def test_coverage_filters(api):
    await _tokyo_roster(api)
    # Without a skill, emi (Japanese, billing, 24/7) covers everything.
    response = await api.http.get(
        "/v1/coverage", params={k: v for k, v in COVERAGE.items() if k != "skill"}, headers=api.admin
    )
    assert response.json()["agents"] == ["emi", "kenji", "mei"]
    assert response.json()["gaps"] == []
    # Without a language, ana (English, video, 24/7) does.
    response = await api.http.get(
        "/v1/coverage", params={k: v for k, v in COVERAGE.items() if k != "language"}, headers=api.admin
    )
    assert response.json()["agents"] == ["ana", "kenji", "mei"]
    assert response.json()["gaps"] == []
    # Nobody speaks Korean: the whole span is one gap.
    response = await api.http.get("/v1/coverage", params={**COVERAGE, "language": "ko"}, headers=api.admin)
    assert response.json()["agents"] == []
    assert gaps_of(response) == [(utc(2026, 3, 8, 15), utc(2026, 3, 10, 15), 2880.0)]


async def test_coverage_rejects_bad_spans_and_customers(api):
    await _tokyo_roster(api)
    url = "/v1/coverage"
    cases = [
        {"from": "2026-03-09T00:00:00+09:00", "to": "2026-03-09T00:00:00+09:00"},  # empty
        {"from": "2026-03-09T00:00:00+09:00", "to": "2026-03-08T23:00:00+09:00"},  # backwards
        {"from": "2026-03-09T00:00:00+09:00", "to": "2026-04-09T01:00:00+09:00"},  # 31 days and an hour
        {"from": "2026-03-09T00:00:00", "to": "2026-03-10T00:00:00+09:00"},  # no offset
        {"from": "2026-03-09T00:00:00+09:00"},  # no end
        {**COVERAGE, "language": "JA"},
    ]
    for params in cases:
        response = await api.http.get(url, params=params, headers=api.admin)
        assert response.status_code == 422, (params, response.text)
    exactly_31_days = {"from": "2026-03-01T00:00:00+09:00", "to": "2026-04-01T00:00:00+09:00"}
    assert (await api.http.get(url, params=exactly_31_days, headers=api.admin)).status_code == 200

    response = await api.http.post(
        "/v1/customers",
        json={"id": "acme", "name": "Acme", "tier": "business", "language": "ja", "region_id": "apac"},
        headers=api.admin,
    )
    customer = api.as_token(response.json()["token"])
    assert (await api.http.get(url, params=COVERAGE, headers=customer)).status_code == 403
    assert (await api.http.get(url, params=COVERAGE)).status_code == 401
    response = await api.http.post(
        "/v1/agents/kenji/overrides",
        json={"kind": "off", "starts_at": "2027-01-04T09:00:00Z", "ends_at": "2027-01-04T17:00:00Z"},
        headers=customer,
    )
    assert response.status_code == 403
