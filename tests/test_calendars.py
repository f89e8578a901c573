"""Business calendars: business-time maths, DST, holidays, exceptions, iCal import and the HTTP API.

Every expected instant below is written out by hand (ISO 8601 with the offset in force locally),
never computed with the code under test.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.calendars import BusinessCalendar, CalendarException, DayHours, OpeningHours
from domain.ical import closed_days_from_ical

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def at(text: str) -> datetime:
    """An aware instant from ISO 8601 text with its offset."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None, text
    return value


def calendar(
    timezone: str,
    hours: list[tuple[int, str, str]] | None = None,
    *,
    always_open: bool = False,
    country: str | None = None,
    subdivision: str | None = None,
    exceptions: list[CalendarException] | None = None,
) -> BusinessCalendar:
    return BusinessCalendar(
        id="test",
        name="Test",
        timezone=timezone,
        always_open=always_open,
        hours=[
            OpeningHours(day=day, start=time.fromisoformat(s), end=time.fromisoformat(e))
            for day, s, e in hours or []
        ],
        holiday_country=country,
        holiday_subdivision=subdivision,
        exceptions=exceptions or [],
    )


def weekdays(start: str, end: str) -> list[tuple[int, str, str]]:
    return [(day, start, end) for day in range(1, 6)]


def every_day(start: str, end: str) -> list[tuple[int, str, str]]:
    return [(day, start, end) for day in range(1, 8)]


NY = calendar("America/New_York", weekdays("09:00", "17:00"))
DUBLIN = calendar("Europe/Dublin", weekdays("09:00", "17:00"))
SYDNEY = calendar("Australia/Sydney", weekdays("09:00", "17:00"))


# --- business hours: the basics -----------------------------------------------------------------


def test_an_hour_at_friday_1630_is_due_monday_0930():
    due = NY.add_business_time(at("2026-11-27T16:30:00-05:00"), 60 * MIN)
    assert due == at("2026-11-30T09:30:00-05:00")
    assert due == at("2026-11-30T14:30:00+00:00")
    assert due.utcoffset() == timedelta(0)  # answers are UTC instants
    assert NY.business_time_between(at("2026-11-27T16:30:00-05:00"), due) == 60 * MIN


def test_the_offset_of_the_start_does_not_matter_only_the_instant():
    # Friday 16:30 in New York, written as Saturday 06:30 in Tokyo.
    due = NY.add_business_time(at("2026-11-28T06:30:00+09:00"), 60 * MIN)
    assert due == at("2026-11-30T09:30:00-05:00")


def test_a_start_before_opening_counts_from_opening():
    assert NY.add_business_time(at("2026-11-30T07:00:00-05:00"), 60 * MIN) == at("2026-11-30T10:00:00-05:00")


def test_a_start_on_a_closed_day_counts_from_the_next_opening():
    assert NY.add_business_time(at("2026-11-28T12:00:00-05:00"), 60 * MIN) == at("2026-11-30T10:00:00-05:00")
    assert NY.add_business_time(at("2026-11-29T23:59:00-05:00"), 60 * MIN) == at("2026-11-30T10:00:00-05:00")


def test_a_start_exactly_at_closing_counts_from_the_next_opening():
    assert NY.add_business_time(at("2026-11-27T17:00:00-05:00"), 60 * MIN) == at("2026-11-30T10:00:00-05:00")


def test_time_that_runs_out_exactly_at_closing_is_due_at_closing():
    assert NY.add_business_time(at("2026-11-27T16:00:00-05:00"), 60 * MIN) == at("2026-11-27T17:00:00-05:00")


def test_a_whole_week_of_business_time():
    monday = at("2026-11-30T09:00:00-05:00")
    assert NY.add_business_time(monday, 5 * 8 * HOUR) == at("2026-12-04T17:00:00-05:00")
    assert NY.add_business_time(monday, 5 * 8 * HOUR + MIN) == at("2026-12-07T09:01:00-05:00")
    assert NY.business_time_between(monday, at("2026-12-07T09:00:00-05:00")) == 40 * HOUR


def test_is_open_is_half_open_at_the_edges():
    assert not NY.is_open(at("2026-11-30T08:59:59-05:00"))
    assert NY.is_open(at("2026-11-30T09:00:00-05:00"))
    assert NY.is_open(at("2026-11-30T16:59:59-05:00"))
    assert not NY.is_open(at("2026-11-30T17:00:00-05:00"))
    assert not NY.is_open(at("2026-11-28T12:00:00-05:00"))  # Saturday


def test_business_time_between_closed_or_backwards_spans_is_zero():
    assert NY.business_time_between(at("2026-11-28T00:00:00-05:00"), at("2026-11-30T00:00:00-05:00")) == (
        timedelta(0)
    )
    assert NY.business_time_between(at("2026-11-30T12:00:00-05:00"), at("2026-11-30T10:00:00-05:00")) == (
        timedelta(0)
    )
    assert NY.windows(at("2026-11-30T12:00:00-05:00"), at("2026-11-30T12:00:00-05:00")) == []


def test_windows_are_utc_clipped_and_skip_closed_days():
    windows = NY.windows(at("2026-11-27T12:00:00-05:00"), at("2026-12-01T00:00:00-05:00"))
    assert windows == [
        (at("2026-11-27T17:00:00+00:00"), at("2026-11-27T22:00:00+00:00")),  # clipped at the start
        (at("2026-11-30T14:00:00+00:00"), at("2026-11-30T22:00:00+00:00")),
    ]
    assert all(w.utcoffset() == timedelta(0) for pair in windows for w in pair)


# --- DST, both directions, both hemispheres -------------------------------------------------------


@pytest.mark.parametrize(
    ("cal", "start", "due"),
    [
        # New York: spring forward 2026-03-08, fall back 2026-11-01.
        (NY, "2026-03-06T16:30:00-05:00", "2026-03-09T09:30:00-04:00"),
        (NY, "2026-10-30T16:30:00-04:00", "2026-11-02T09:30:00-05:00"),
        # Dublin: GMT -> IST 2026-03-29, IST -> GMT 2026-10-25.
        (DUBLIN, "2026-03-27T16:30:00+00:00", "2026-03-30T09:30:00+01:00"),
        (DUBLIN, "2026-10-23T16:30:00+01:00", "2026-10-26T09:30:00+00:00"),
        # Sydney: AEDT -> AEST 2026-04-05 (clocks back), AEST -> AEDT 2026-10-04 (forward).
        (SYDNEY, "2026-04-03T16:30:00+11:00", "2026-04-06T09:30:00+10:00"),
        (SYDNEY, "2026-10-02T16:30:00+10:00", "2026-10-05T09:30:00+11:00"),
    ],
    ids=["ny-spring", "ny-fall", "dublin-spring", "dublin-fall", "sydney-april", "sydney-october"],
)
def test_business_hours_across_a_dst_weekend(cal, start, due):
    assert cal.add_business_time(at(start), 60 * MIN) == at(due)
    assert cal.business_time_between(at(start), at(due)) == 60 * MIN


def test_business_hours_follow_local_time_after_the_change():
    windows = NY.windows(at("2026-03-06T00:00:00-05:00"), at("2026-03-10T00:00:00-04:00"))
    assert windows == [
        (at("2026-03-06T14:00:00+00:00"), at("2026-03-06T22:00:00+00:00")),
        (at("2026-03-09T13:00:00+00:00"), at("2026-03-09T21:00:00+00:00")),
    ]


NY_24H = calendar("America/New_York", every_day("00:00", "00:00"))


def test_a_24h_calendar_has_23_and_25_hour_days_in_new_york():
    assert NY_24H.business_time_between(at("2026-03-08T00:00:00-05:00"), at("2026-03-09T00:00:00-04:00")) == (
        23 * HOUR
    )
    assert NY_24H.business_time_between(at("2026-11-01T00:00:00-04:00"), at("2026-11-02T00:00:00-05:00")) == (
        25 * HOUR
    )
    # One real hour after the first 01:30 on the fall-back night is the second 01:30.
    assert NY_24H.add_business_time(at("2026-11-01T01:30:00-04:00"), HOUR) == at("2026-11-01T01:30:00-05:00")
    # One real hour after 01:30 on the spring-forward night is 03:30.
    assert NY_24H.add_business_time(at("2026-03-08T01:30:00-05:00"), HOUR) == at("2026-03-08T03:30:00-04:00")
    assert NY_24H.is_open(at("2026-03-08T03:30:00-04:00"))


def test_a_24h_calendar_is_one_merged_window():
    assert NY_24H.windows(at("2026-10-28T12:00:00-04:00"), at("2026-11-04T12:00:00-05:00")) == [
        (at("2026-10-28T16:00:00+00:00"), at("2026-11-04T17:00:00+00:00"))
    ]


def test_sunday_night_hours_shrink_and_grow_with_the_clocks():
    early = calendar("America/New_York", [(7, "00:00", "04:00")])
    assert early.windows(at("2026-03-08T00:00:00-05:00"), at("2026-03-08T12:00:00-04:00")) == [
        (at("2026-03-08T05:00:00+00:00"), at("2026-03-08T08:00:00+00:00"))
    ]
    assert early.windows(at("2026-11-01T00:00:00-04:00"), at("2026-11-01T12:00:00-05:00")) == [
        (at("2026-11-01T04:00:00+00:00"), at("2026-11-01T09:00:00+00:00"))
    ]


@pytest.mark.parametrize(
    ("timezone", "evening", "noon", "opens", "closes", "real_hours"),
    [
        ("America/New_York", "2026-03-07T20:00:00-05:00", "2026-03-08T12:00:00-04:00",
         "2026-03-08T03:00:00+00:00", "2026-03-08T10:00:00+00:00", 7),
        ("America/New_York", "2026-10-31T20:00:00-04:00", "2026-11-01T12:00:00-05:00",
         "2026-11-01T02:00:00+00:00", "2026-11-01T11:00:00+00:00", 9),
        ("Europe/Dublin", "2026-03-28T20:00:00+00:00", "2026-03-29T12:00:00+01:00",
         "2026-03-28T22:00:00+00:00", "2026-03-29T05:00:00+00:00", 7),
        ("Europe/Dublin", "2026-10-24T20:00:00+01:00", "2026-10-25T12:00:00+00:00",
         "2026-10-24T21:00:00+00:00", "2026-10-25T06:00:00+00:00", 9),
        ("Australia/Sydney", "2026-04-04T20:00:00+11:00", "2026-04-05T12:00:00+10:00",
         "2026-04-04T11:00:00+00:00", "2026-04-04T20:00:00+00:00", 9),
        ("Australia/Sydney", "2026-10-03T20:00:00+10:00", "2026-10-04T12:00:00+11:00",
         "2026-10-03T12:00:00+00:00", "2026-10-03T19:00:00+00:00", 7),
    ],
    ids=["ny-spring", "ny-fall", "dublin-spring", "dublin-fall", "sydney-april", "sydney-october"],
)  # fmt: skip
def test_an_overnight_shift_on_a_dst_night(timezone, evening, noon, opens, closes, real_hours):
    night = calendar(timezone, every_day("22:00", "06:00"))
    assert night.windows(at(evening), at(noon)) == [(at(opens), at(closes))]
    assert night.business_time_between(at(evening), at(noon)) == real_hours * HOUR
    # The whole shift, started at its opening, ends exactly at its closing.
    assert night.add_business_time(at(opens), real_hours * HOUR) == at(closes)


def test_an_overnight_shift_continues_the_next_night():
    night = calendar("America/New_York", every_day("22:00", "06:00"))
    # 7 real hours on the spring-forward night, the 8th from Sunday 22:00 EDT.
    assert night.add_business_time(at("2026-03-07T22:00:00-05:00"), 8 * HOUR) == at(
        "2026-03-08T23:00:00-04:00"
    )


# --- overnight, split and 24h hours ---------------------------------------------------------------


SATURDAY_NIGHT = calendar("America/New_York", [(6, "22:00", "06:00")])


def test_overnight_hours_belong_to_the_day_they_start():
    assert SATURDAY_NIGHT.is_open(at("2026-06-13T22:00:00-04:00"))  # Saturday
    assert SATURDAY_NIGHT.is_open(at("2026-06-14T03:00:00-04:00"))  # Sunday morning, Saturday's entry
    assert not SATURDAY_NIGHT.is_open(at("2026-06-14T06:00:00-04:00"))
    assert not SATURDAY_NIGHT.is_open(at("2026-06-13T03:00:00-04:00"))  # would be Friday's entry
    assert not SATURDAY_NIGHT.is_open(at("2026-06-14T22:30:00-04:00"))  # Sunday night
    assert SATURDAY_NIGHT.windows(at("2026-06-13T12:00:00-04:00"), at("2026-06-14T12:00:00-04:00")) == [
        (at("2026-06-14T02:00:00+00:00"), at("2026-06-14T10:00:00+00:00"))
    ]


def test_adding_time_through_overnight_hours():
    assert SATURDAY_NIGHT.add_business_time(at("2026-06-13T21:00:00-04:00"), 60 * MIN) == at(
        "2026-06-13T23:00:00-04:00"
    )
    # 30 minutes left on Sunday morning, the other 30 the next Saturday night.
    assert SATURDAY_NIGHT.add_business_time(at("2026-06-14T05:30:00-04:00"), 60 * MIN) == at(
        "2026-06-20T22:30:00-04:00"
    )


def test_exceptions_apply_to_the_day_an_overnight_shift_starts():
    closed_sunday = SATURDAY_NIGHT.model_copy(
        update={"exceptions": [CalendarException(date=date(2026, 6, 14))]}
    )
    assert closed_sunday.is_open(at("2026-06-14T03:00:00-04:00"))
    closed_saturday = SATURDAY_NIGHT.model_copy(
        update={"exceptions": [CalendarException(date=date(2026, 6, 13))]}
    )
    assert not closed_saturday.is_open(at("2026-06-13T23:00:00-04:00"))
    assert not closed_saturday.is_open(at("2026-06-14T03:00:00-04:00"))


SPLIT = calendar("Europe/Dublin", weekdays("09:00", "12:00") + weekdays("13:00", "17:00"))


def test_split_hours_skip_the_lunch_break():
    assert SPLIT.add_business_time(at("2026-06-15T11:30:00+01:00"), 60 * MIN) == at(
        "2026-06-15T13:30:00+01:00"
    )
    assert not SPLIT.is_open(at("2026-06-15T12:30:00+01:00"))
    assert SPLIT.is_open(at("2026-06-15T13:00:00+01:00"))
    assert SPLIT.business_time_between(at("2026-06-15T00:00:00+01:00"), at("2026-06-16T00:00:00+01:00")) == (
        7 * HOUR
    )
    assert SPLIT.windows(at("2026-06-15T00:00:00+01:00"), at("2026-06-16T00:00:00+01:00")) == [
        (at("2026-06-15T08:00:00+00:00"), at("2026-06-15T11:00:00+00:00")),
        (at("2026-06-15T12:00:00+00:00"), at("2026-06-15T16:00:00+00:00")),
    ]
    # Friday 16:30: 30 minutes Friday, 180 Monday morning, 30 Monday afternoon.
    assert SPLIT.add_business_time(at("2026-06-19T16:30:00+01:00"), 240 * MIN) == at(
        "2026-06-22T13:30:00+01:00"
    )


def test_end_equal_to_start_means_24_hours():
    wednesday = calendar("America/New_York", [(3, "08:00", "08:00")])
    assert wednesday.windows(at("2026-06-16T00:00:00-04:00"), at("2026-06-20T00:00:00-04:00")) == [
        (at("2026-06-17T12:00:00+00:00"), at("2026-06-18T12:00:00+00:00"))
    ]
    assert wednesday.is_open(at("2026-06-18T07:59:00-04:00"))
    assert not wednesday.is_open(at("2026-06-18T08:00:00-04:00"))
    assert wednesday.add_business_time(at("2026-06-15T00:00:00-04:00"), 24 * HOUR) == at(
        "2026-06-18T08:00:00-04:00"
    )


# --- holidays -----------------------------------------------------------------------------------


def test_irish_holidays_close_st_patricks_day():
    irish = calendar("Europe/Dublin", weekdays("09:00", "17:00"), country="IE")
    assert not irish.is_open(at("2026-03-17T12:00:00+00:00"))
    assert DUBLIN.is_open(at("2026-03-17T12:00:00+00:00"))  # the same hours without holidays
    assert irish.add_business_time(at("2026-03-16T16:30:00+00:00"), 60 * MIN) == at(
        "2026-03-18T09:30:00+00:00"
    )
    assert irish.business_time_between(at("2026-03-16T00:00:00+00:00"), at("2026-03-19T00:00:00+00:00")) == (
        16 * HOUR
    )


def test_us_holidays_and_a_new_york_subdivision():
    federal = calendar("America/New_York", weekdays("09:00", "17:00"), country="US")
    new_york = calendar("America/New_York", weekdays("09:00", "17:00"), country="US", subdivision="NY")
    # Thanksgiving, Thursday 2026-11-26, is federal.
    for cal in (federal, new_york):
        assert not cal.is_open(at("2026-11-26T12:00:00-05:00"))
        assert cal.add_business_time(at("2026-11-25T16:30:00-05:00"), 60 * MIN) == at(
            "2026-11-27T09:30:00-05:00"
        )
    # Lincoln's Birthday, Thursday 2026-02-12, is a New York State holiday only.
    assert federal.is_open(at("2026-02-12T12:00:00-05:00"))
    assert not new_york.is_open(at("2026-02-12T12:00:00-05:00"))
    assert new_york.add_business_time(at("2026-02-11T16:30:00-05:00"), 60 * MIN) == at(
        "2026-02-13T09:30:00-05:00"
    )
    assert federal.add_business_time(at("2026-02-11T16:30:00-05:00"), 60 * MIN) == at(
        "2026-02-12T09:30:00-05:00"
    )


def test_an_unknown_holiday_country_or_subdivision_is_a_validation_error():
    with pytest.raises(ValidationError, match="no holidays known"):
        calendar("Europe/Dublin", weekdays("09:00", "17:00"), country="XX")
    with pytest.raises(ValidationError, match="no holidays known"):
        calendar("America/New_York", weekdays("09:00", "17:00"), country="US", subdivision="ZZ")


# --- exceptions ---------------------------------------------------------------------------------


def test_a_closed_exception_closes_the_day():
    offsite = NY.model_copy(
        update={"exceptions": [CalendarException(date=date(2026, 6, 17), label="Offsite")]}
    )
    assert not offsite.is_open(at("2026-06-17T12:00:00-04:00"))
    assert offsite.add_business_time(at("2026-06-16T16:30:00-04:00"), 60 * MIN) == at(
        "2026-06-18T09:30:00-04:00"
    )


def test_special_hours_replace_the_weekly_hours_that_day():
    short_day = NY.model_copy(
        update={
            "exceptions": [
                CalendarException(date=date(2026, 6, 18), hours=[DayHours(start=time(10), end=time(12))]),
                CalendarException(date=date(2026, 6, 20), hours=[DayHours(start=time(10), end=time(14))]),
            ]
        }
    )
    assert not short_day.is_open(at("2026-06-18T09:30:00-04:00"))
    assert short_day.is_open(at("2026-06-18T10:00:00-04:00"))
    assert not short_day.is_open(at("2026-06-18T13:00:00-04:00"))
    assert short_day.business_time_between(
        at("2026-06-18T00:00:00-04:00"), at("2026-06-19T00:00:00-04:00")
    ) == (2 * HOUR)
    assert short_day.add_business_time(at("2026-06-17T16:30:00-04:00"), 60 * MIN) == at(
        "2026-06-18T10:30:00-04:00"
    )
    # Special hours open a Saturday that is normally closed.
    assert short_day.add_business_time(at("2026-06-19T16:30:00-04:00"), 60 * MIN) == at(
        "2026-06-20T10:30:00-04:00"
    )


def test_an_exception_takes_precedence_over_a_holiday():
    cal = calendar(
        "America/New_York",
        weekdays("09:00", "17:00"),
        country="US",
        exceptions=[
            CalendarException(date=date(2026, 11, 26), hours=[DayHours(start=time(9), end=time(13))])
        ],
    )
    assert cal.is_open(at("2026-11-26T10:00:00-05:00"))
    assert not cal.is_open(at("2026-11-26T14:00:00-05:00"))


# --- leap day, always open, edge amounts --------------------------------------------------------


def test_leap_day_is_an_ordinary_tuesday():
    assert NY.is_open(at("2028-02-29T12:00:00-05:00"))
    assert NY.add_business_time(at("2028-02-28T16:30:00-05:00"), 60 * MIN) == at("2028-02-29T09:30:00-05:00")
    assert NY.add_business_time(at("2028-02-29T16:30:00-05:00"), 60 * MIN) == at("2028-03-01T09:30:00-05:00")
    assert NY.business_time_between(at("2028-02-29T00:00:00-05:00"), at("2028-03-01T00:00:00-05:00")) == (
        8 * HOUR
    )


ALWAYS_NY = calendar("America/New_York", always_open=True)


def test_always_open_counts_every_minute_even_across_dst():
    assert ALWAYS_NY.add_business_time(at("2026-03-08T01:00:00-05:00"), 120 * MIN) == at(
        "2026-03-08T04:00:00-04:00"
    )
    assert ALWAYS_NY.business_time_between(
        at("2026-11-01T00:00:00-04:00"), at("2026-11-02T00:00:00-05:00")
    ) == (25 * HOUR)
    assert ALWAYS_NY.is_open(at("2026-12-25T03:00:00-05:00"))
    always_utc = calendar("UTC", always_open=True)
    assert always_utc.add_business_time(at("2026-03-07T23:00:00+00:00"), 1500 * MIN) == at(
        "2026-03-09T00:00:00+00:00"
    )


def test_zero_minutes_is_the_start_even_when_closed():
    saturday = at("2026-11-28T12:00:00-05:00")
    assert NY.add_business_time(saturday, timedelta(0)) == saturday


def test_negative_business_time_is_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        NY.add_business_time(at("2026-11-30T12:00:00-05:00"), -MIN)


def test_a_calendar_that_never_opens_within_the_horizon_says_so():
    first_monday = date(2026, 1, 5)
    mondays = [first_monday + timedelta(weeks=n) for n in range(4 * 53)]  # four years and more
    never = calendar(
        "UTC",
        [(1, "09:00", "17:00")],
        exceptions=[CalendarException(date=d, label="closed") for d in mondays],
    )
    with pytest.raises(ValueError, match="no open time"):
        never.add_business_time(at("2026-01-01T00:00:00+00:00"), MIN)


def test_long_amounts_on_an_always_open_calendar_are_not_mistaken_for_no_open_time():
    """BUG: SEARCH_HORIZON caps the whole span added, not the search for the next open minute.

    2,000,000 minutes (allowed by SlaPreviewRequest, le=10_000_000) on a 24/7 calendar raise
    "has no open time within 1098 days" instead of returning start + 2,000,000 minutes.
    """
    always_utc = calendar("UTC", always_open=True)
    assert always_utc.add_business_time(at("2026-01-01T00:00:00+00:00"), 2_000_000 * MIN) == at(
        "2029-10-20T21:20:00+00:00"
    )


# --- validation ---------------------------------------------------------------------------------


def test_calendar_validation_errors():
    with pytest.raises(ValidationError, match="unknown IANA time zone"):
        calendar("Mars/Olympus_Mons", weekdays("09:00", "17:00"))
    with pytest.raises(ValidationError, match="needs opening hours"):
        calendar("Europe/Dublin")
    with pytest.raises(ValidationError):
        calendar("Europe/Dublin", [(8, "09:00", "17:00")])
    with pytest.raises(ValidationError):
        calendar("Europe/Dublin", [(0, "09:00", "17:00")])
    assert calendar("UTC", always_open=True).hours == []


# --- properties ---------------------------------------------------------------------------------


PROPERTY_CALENDARS = [
    calendar("America/New_York", weekdays("09:00", "17:00"), country="US"),
    calendar("Europe/Dublin", weekdays("09:00", "12:00") + weekdays("13:00", "17:30"), country="IE"),
    calendar("Australia/Sydney", weekdays("22:00", "06:00")),
    calendar("UTC", always_open=True),
]
CALENDAR_IDS = ["ny-us", "dublin-split", "sydney-overnight", "always"]

instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
whole_minutes = instants.map(lambda d: d.replace(second=0, microsecond=0))


@pytest.mark.parametrize("cal", PROPERTY_CALENDARS, ids=CALENDAR_IDS)
@settings(max_examples=60, deadline=None)
@given(start=instants, a=st.integers(0, 5000), b=st.integers(0, 5000))
def test_more_minutes_never_give_an_earlier_due(cal, start, a, b):
    low, high = sorted((a, b))
    assert cal.add_business_time(start, low * MIN) <= cal.add_business_time(start, high * MIN)


@pytest.mark.parametrize("cal", PROPERTY_CALENDARS, ids=CALENDAR_IDS)
@settings(max_examples=60, deadline=None)
@given(start=instants, minutes=st.integers(0, 5000))
def test_business_time_between_undoes_add_business_time(cal, start, minutes):
    due = cal.add_business_time(start, minutes * MIN)
    assert due >= start
    assert cal.business_time_between(start, due) == minutes * MIN


def brute_force_due(cal: BusinessCalendar, start: datetime, minutes: int) -> datetime:
    """Step minute by minute, asking is_open at each minute's midpoint."""
    if minutes == 0:
        return start
    cursor, counted = start, 0
    while True:
        if cal.is_open(cursor + 30 * timedelta(seconds=1)):
            counted += 1
            if counted == minutes:
                return cursor + MIN
        cursor += MIN


@pytest.mark.parametrize("cal", PROPERTY_CALENDARS, ids=CALENDAR_IDS)
@settings(max_examples=60, deadline=None)
@given(start=whole_minutes, minutes=st.integers(0, 600))
def test_add_business_time_matches_a_minute_by_minute_count(cal, start, minutes):
    assert cal.add_business_time(start, minutes * MIN) == brute_force_due(cal, start, minutes)


# --- iCalendar import ---------------------------------------------------------------------------


def ics(*events: str) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Meridian tests//EN"]
    for n, event in enumerate(events):
        lines += ["BEGIN:VEVENT", f"UID:event-{n}@meridian.test", "DTSTAMP:20260101T000000Z"]
        lines += event.strip().splitlines()
        lines += ["END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


HOLIDAY_FEED = ics(
    """
DTSTART;VALUE=DATE:20261224
DTEND;VALUE=DATE:20261227
SUMMARY:Christmas break
""",
    """
DTSTART;VALUE=DATE:20260317
DTEND;VALUE=DATE:20260318
SUMMARY:St Patrick's Day
""",
    """
DTSTART:20260601T100000Z
DTEND:20260601T110000Z
SUMMARY:Team meeting
""",
    """
DTSTART;TZID=Europe/Dublin:20260602T090000
DTEND;TZID=Europe/Dublin:20260602T170000
SUMMARY:Training day
""",
    """
DTSTART;VALUE=DATE:20260704
SUMMARY:No end given
""",
)


def test_all_day_events_become_closed_days_with_their_summary():
    closed = closed_days_from_ical(HOLIDAY_FEED)
    assert [(c.date, c.label, c.hours) for c in closed] == [
        (date(2026, 3, 17), "St Patrick's Day", []),
        (date(2026, 7, 4), "No end given", []),  # no DTEND: one day
        (date(2026, 12, 24), "Christmas break", []),
        (date(2026, 12, 25), "Christmas break", []),
        (date(2026, 12, 26), "Christmas break", []),  # DTEND 12-27 is exclusive
    ]


def test_timed_events_are_not_closures():
    feed = ics("DTSTART:20260601T100000Z\nDTEND:20260601T110000Z\nSUMMARY:Meeting")
    assert closed_days_from_ical(feed) == []


def test_an_all_day_event_with_a_duration_closes_every_day_it_spans():
    """BUG: RFC 5545 allows DTSTART;VALUE=DATE + DURATION instead of DTEND; DURATION is ignored."""
    feed = ics("DTSTART;VALUE=DATE:20261224\nDURATION:P3D\nSUMMARY:Christmas break")
    assert [c.date for c in closed_days_from_ical(feed)] == [
        date(2026, 12, 24),
        date(2026, 12, 25),
        date(2026, 12, 26),
    ]


def test_a_feed_closing_more_than_2000_days_is_refused():
    feed = ics("DTSTART;VALUE=DATE:20260101\nDTEND;VALUE=DATE:20320101\nSUMMARY:Six years off")
    with pytest.raises(ValueError, match="more than 2000 days"):
        closed_days_from_ical(feed)


@pytest.mark.parametrize("text", ["garbage", "", "hello: world", "not\r\nan\r\nical\r\n"])
def test_garbage_is_not_an_ical_feed(text):
    with pytest.raises(ValueError, match="not an iCalendar feed"):
        closed_days_from_ical(text)


# --- HTTP API -----------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # the calendars table outlives each test


def ny_body(calendar_id: str, **extra) -> dict:
    return {
        "id": calendar_id,
        "name": "New York business hours",
        "timezone": "America/New_York",
        "hours": [{"day": d, "start": "09:00", "end": "17:00"} for d in range(1, 6)],
        "holiday_country": "US",
        **extra,
    }


async def test_calendar_crud_through_the_api(api):
    cid = unique("ny")
    created = await api.http.post("/v1/calendars", json=ny_body(cid), headers=api.admin)
    assert created.status_code == 201, created.text
    assert created.json()["id"] == cid
    assert created.json()["timezone"] == "America/New_York"
    assert len(created.json()["hours"]) == 5

    again = await api.http.post("/v1/calendars", json=ny_body(cid), headers=api.admin)
    assert again.status_code == 409, again.text

    bad_tz = await api.http.post(
        "/v1/calendars", json=ny_body(unique("bad"), timezone="Mars/Olympus_Mons"), headers=api.admin
    )
    assert bad_tz.status_code == 422, bad_tz.text
    bad_country = await api.http.post(
        "/v1/calendars", json=ny_body(unique("bad"), holiday_country="XX"), headers=api.admin
    )
    assert bad_country.status_code == 422, bad_country.text

    listed = await api.http.get("/v1/calendars", headers=api.admin)
    assert listed.status_code == 200
    ids = [c["id"] for c in listed.json()]
    assert cid in ids and "always" in ids
    assert ids == sorted(ids)

    one = await api.http.get(f"/v1/calendars/{cid}", headers=api.admin)
    assert one.status_code == 200 and one.json() == created.json()
    missing = await api.http.get(f"/v1/calendars/{unique('nope')}", headers=api.admin)
    assert missing.status_code == 404

    replaced = await api.http.put(
        f"/v1/calendars/{cid}",
        json=ny_body(cid, name="Renamed", holiday_subdivision="NY"),
        headers=api.admin,
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Renamed"
    assert (await api.http.get(f"/v1/calendars/{cid}", headers=api.admin)).json()[
        "holiday_subdivision"
    ] == "NY"

    mismatch = await api.http.put(f"/v1/calendars/{cid}", json=ny_body(unique("other")), headers=api.admin)
    assert mismatch.status_code == 422, mismatch.text
    nope = unique("nope")
    unknown = await api.http.put(f"/v1/calendars/{nope}", json=ny_body(nope), headers=api.admin)
    assert unknown.status_code == 404

    deleted = await api.http.delete(f"/v1/calendars/{cid}", headers=api.admin)
    assert deleted.status_code == 200 and deleted.json() == {"id": cid}
    assert (await api.http.get(f"/v1/calendars/{cid}", headers=api.admin)).status_code == 404
    assert (await api.http.delete(f"/v1/calendars/{cid}", headers=api.admin)).status_code == 404


async def test_the_seeded_always_calendar_exists(api):
    response = await api.http.get("/v1/calendars/always", headers=api.admin)
    assert response.status_code == 200
    assert response.json()["always_open"] is True
    assert response.json()["timezone"] == "UTC"


async def test_a_calendar_id_the_database_refuses_is_a_422(api):
    """BUG: BusinessCalendar.id has no pattern, but the table CHECKs ^[a-z][a-z0-9_-]{1,63}$.

    POST /v1/calendars with id "Not A Slug" passes validation and the INSERT raises
    asyncpg CheckViolationError: a 500 instead of a 422.
    """
    try:
        response = await api.http.post("/v1/calendars", json=ny_body("Not A Slug"), headers=api.admin)
    except asyncpg.CheckViolationError as err:
        pytest.fail(f"the database refused the id and the API answered 500: {err}")
    assert response.status_code == 422, response.text


async def test_ical_import_adds_closed_days(api):
    cid = unique("ical")
    body = ny_body(
        cid,
        exceptions=[
            {"date": "2026-06-17", "hours": [], "label": "Offsite"},
            {"date": "2026-12-24", "hours": [{"start": "09:00", "end": "12:00"}], "label": "Half day"},
        ],
    )
    assert (await api.http.post("/v1/calendars", json=body, headers=api.admin)).status_code == 201

    response = await api.http.post(
        f"/v1/calendars/{cid}/ical",
        content=HOLIDAY_FEED.encode(),
        headers={**api.admin, "content-type": "text/calendar"},
    )
    assert response.status_code == 200, response.text
    exceptions = {e["date"]: e for e in response.json()["exceptions"]}
    assert sorted(exceptions) == [
        "2026-03-17",
        "2026-06-17",
        "2026-07-04",
        "2026-12-24",
        "2026-12-25",
        "2026-12-26",
    ]
    assert exceptions["2026-06-17"]["label"] == "Offsite"  # untouched
    assert exceptions["2026-12-24"] == {"date": "2026-12-24", "hours": [], "label": "Christmas break"}
    stored = (await api.http.get(f"/v1/calendars/{cid}", headers=api.admin)).json()
    assert stored["exceptions"] == response.json()["exceptions"]

    # Wednesday 2026-12-23 16:30 + 60 minutes: 30 that day, Christmas break, Monday 12-28 09:30.
    preview = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": cid, "start": "2026-12-23T16:30:00-05:00", "minutes": 60},
        headers=api.admin,
    )
    assert preview.status_code == 200, preview.text
    assert datetime.fromisoformat(preview.json()["due"]) == at("2026-12-28T09:30:00-05:00")

    garbage = await api.http.post(
        f"/v1/calendars/{cid}/ical",
        content=b"garbage",
        headers={**api.admin, "content-type": "text/calendar"},
    )
    assert garbage.status_code == 422, garbage.text
    unknown = await api.http.post(
        f"/v1/calendars/{unique('nope')}/ical",
        content=HOLIDAY_FEED.encode(),
        headers={**api.admin, "content-type": "text/calendar"},
    )
    assert unknown.status_code == 404


async def test_sla_preview(api):
    cid = unique("sla")
    assert (await api.http.post("/v1/calendars", json=ny_body(cid), headers=api.admin)).status_code == 201

    response = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": cid, "start": "2026-11-27T16:30:00-05:00", "minutes": 60},
        headers=api.admin,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    due = datetime.fromisoformat(body["due"])
    assert due.tzinfo is not None, body["due"]
    assert due == at("2026-11-30T09:30:00-05:00")
    due_local = datetime.fromisoformat(body["due_local"])
    assert due_local == due and due_local.utcoffset() == timedelta(hours=-5)
    assert body["calendar_id"] == cid and body["timezone"] == "America/New_York"

    always = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": "always", "start": "2026-11-27T16:30:00-05:00", "minutes": 60},
        headers=api.admin,
    )
    assert always.status_code == 200, always.text
    assert datetime.fromisoformat(always.json()["due"]) == at("2026-11-27T22:30:00+00:00")

    naive = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": cid, "start": "2026-11-27T16:30:00", "minutes": 60},
        headers=api.admin,
    )
    assert naive.status_code == 422, naive.text
    negative = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": cid, "start": "2026-11-27T16:30:00-05:00", "minutes": -1},
        headers=api.admin,
    )
    assert negative.status_code == 422, negative.text
    unknown = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": unique("nope"), "start": "2026-11-27T16:30:00-05:00", "minutes": 60},
        headers=api.admin,
    )
    assert unknown.status_code == 404, unknown.text


async def test_sla_preview_on_a_calendar_that_never_opens_is_a_422(api):
    cid = unique("never")
    mondays = [date(2026, 1, 5) + timedelta(weeks=n) for n in range(4 * 53)]
    body = {
        "id": cid,
        "name": "Mondays, all excepted",
        "timezone": "UTC",
        "hours": [{"day": 1, "start": "09:00", "end": "17:00"}],
        "exceptions": [{"date": d.isoformat(), "hours": []} for d in mondays],
    }
    assert (await api.http.post("/v1/calendars", json=body, headers=api.admin)).status_code == 201
    response = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": cid, "start": "2026-01-01T00:00:00+00:00", "minutes": 1},
        headers=api.admin,
    )
    assert response.status_code == 422, response.text
    assert "no open time" in response.text


async def test_customers_may_not_use_calendars(api):
    customer = await api.http.post(
        "/v1/customers",
        json={"id": unique("cal-customer"), "name": "Calendar Customer", "region_id": "emea"},
        headers=api.admin,
    )
    assert customer.status_code == 201, customer.text
    as_customer = api.as_token(customer.json()["token"])
    preview = await api.http.post(
        "/v1/sla/preview",
        json={"calendar_id": "always", "start": "2026-11-27T16:30:00-05:00", "minutes": 60},
        headers=as_customer,
    )
    assert preview.status_code == 403, preview.text
    assert (await api.http.get("/v1/calendars", headers=as_customer)).status_code == 403
    created = await api.http.post("/v1/calendars", json=ny_body(unique("cust")), headers=as_customer)
    assert created.status_code == 403
