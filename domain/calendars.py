"""Business calendars: when a region or a customer contract counts time.

A calendar has weekly opening hours in its own time zone (split and overnight hours allowed),
public holidays from the `holidays` package (by country and subdivision), and one-off
exceptions (closed days, special hours). All maths works on UTC instants: the calendar turns
a span of time into its open windows, so DST changes and midnight need no special cases.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import BaseModel, Field, field_validator, model_validator

from domain.text import Instant, LocalTime, PlainText

CALENDAR_ID = r"^[a-z][a-z0-9_-]{1,63}$"
# How long a stretch without any open time add_business_time accepts before giving up.
SEARCH_HORIZON = timedelta(days=3 * 366)
_CHUNK = timedelta(days=14)


class OpeningHours(BaseModel):
    """One opening on a weekday; `end <= start` runs past midnight, `end == start` is 24 hours."""

    day: int = Field(ge=1, le=7, description="ISO weekday, Monday=1")
    start: LocalTime
    end: LocalTime


class DayHours(BaseModel):
    start: LocalTime
    end: LocalTime


class CalendarException(BaseModel):
    """A date that does not follow the weekly hours: closed, or open at these hours instead."""

    date: date
    hours: list[DayHours] = Field(default_factory=list, description="empty means closed all day")
    label: PlainText | None = Field(default=None, max_length=200)


class BusinessCalendar(BaseModel):
    id: str = Field(pattern=CALENDAR_ID)
    name: PlainText = Field(min_length=1, max_length=200)
    timezone: str
    always_open: bool = Field(default=False, description="24/7: every minute counts")
    hours: list[OpeningHours] = Field(default_factory=list)
    holiday_country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2,3}$", description="ISO 3166 code for the holidays package"
    )
    holiday_subdivision: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,10}$")
    exceptions: list[CalendarException] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _holidays_exist(self) -> BusinessCalendar:
        if self.holiday_country is not None:
            subdivisions = _supported_holidays().get(self.holiday_country)
            if subdivisions is None or (
                self.holiday_subdivision and self.holiday_subdivision not in subdivisions
            ):
                raise ValueError(
                    f"no holidays known for {self.holiday_country}/{self.holiday_subdivision or '-'}"
                )
        if not self.always_open and not self._has_hours():
            raise ValueError("a calendar needs opening hours unless it is always_open")
        return self

    def _has_hours(self) -> bool:
        return bool(self.hours)

    # --- windows --------------------------------------------------------------------------

    def _hours_on(self, day: date) -> list[tuple[time, time]]:
        for exception in self.exceptions:
            if exception.date == day:
                return [(h.start, h.end) for h in exception.hours]
        if self.holiday_country and day in _holiday_dates(
            self.holiday_country, self.holiday_subdivision, day.year
        ):
            return []
        return [(h.start, h.end) for h in self.hours if h.day == day.isoweekday()]

    def windows(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Open intervals (UTC, merged, clipped) between two instants."""
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end <= start:
            return []
        if self.always_open:
            return [(start, end)]
        tz = ZoneInfo(self.timezone)
        raw: list[tuple[datetime, datetime]] = []
        day = start.astimezone(tz).date() - timedelta(days=1)  # yesterday's overnight hours reach today
        last = end.astimezone(tz).date()
        while day <= last:
            for opens, closes in self._hours_on(day):
                close_day = day if closes > opens else day + timedelta(days=1)
                local_open = datetime.combine(day, opens, tzinfo=tz)
                local_close = datetime.combine(close_day, closes, tzinfo=tz)
                raw.append((local_open.astimezone(UTC), local_close.astimezone(UTC)))
            day += timedelta(days=1)
        merged: list[tuple[datetime, datetime]] = []
        for w_start, w_end in sorted(raw):
            w_start, w_end = max(w_start, start), min(w_end, end)
            if w_end <= w_start:
                continue
            if merged and w_start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], w_end))
            else:
                merged.append((w_start, w_end))
        return merged

    def is_open(self, at: datetime) -> bool:
        return bool(self.windows(at, at + timedelta(microseconds=1)))

    # --- business time --------------------------------------------------------------------

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        return sum((w_end - w_start for w_start, w_end in self.windows(start, end)), timedelta(0))

    def add_business_time(self, start: datetime, amount: timedelta) -> datetime:
        """The instant when `amount` of open time has passed after `start`.

        Zero returns `start` itself even when closed: nothing is owed yet.
        """
        if amount < timedelta(0):
            raise ValueError("business time to add must not be negative")
        start = start.astimezone(UTC)
        if amount == timedelta(0):
            return start
        if self.always_open:
            return start + amount
        remaining, cursor, last_open = amount, start, start
        while cursor - last_open < SEARCH_HORIZON:
            chunk_end = cursor + _CHUNK
            for w_start, w_end in self.windows(cursor, chunk_end):
                if w_end - w_start >= remaining:
                    return w_start + remaining
                remaining -= w_end - w_start
                last_open = w_end
            cursor = chunk_end
        raise ValueError(
            f"calendar {self.id!r} has no open time within {SEARCH_HORIZON.days} days after {last_open}"
        )


class SlaPreviewRequest(BaseModel):
    calendar_id: str = Field(pattern=CALENDAR_ID)
    start: Instant = Field(description="ISO 8601 with offset")
    minutes: int = Field(ge=0, le=10_000_000)


class SlaPreview(BaseModel):
    due: datetime
    calendar_id: str
    timezone: str
    due_local: datetime


@lru_cache(maxsize=1)
def _supported_holidays() -> dict[str, list[str]]:
    return holidays.list_supported_countries(include_aliases=True)


@lru_cache(maxsize=256)
def _holiday_dates(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year).keys())
