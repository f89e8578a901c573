"""Rosters: when each agent is on shift, with overrides (sick leave, swaps, extra cover).

An agent works either their own weekly shift or a region's shared, named shift pattern, which
may rotate over several weeks (a day week, a night week, a week off). Either is read as a
business calendar in the region's time zone, so shift windows get the same DST and midnight
handling as SLA maths. Overrides then cut time out (`off`) or add it (`extra`). Coverage gaps
are what is left of a span when every qualified agent's windows are taken away.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator, model_validator

from domain.calendars import BusinessCalendar, OpeningHours
from domain.text import Instant, LocalTime, PlainText

PATTERN_ID = r"^[a-z][a-z0-9_-]{1,63}$"
MAX_ROTATION_WEEKS = 12

Interval = tuple[datetime, datetime]
# How far ahead a shift's end is looked for; a shift running longer is treated as continuous.
SHIFT_LOOKAHEAD = timedelta(days=8)
MAX_OVERRIDE = timedelta(days=120)


class OverrideKind(StrEnum):
    OFF = "off"  # sick leave, holiday, swapped away
    EXTRA = "extra"  # extra cover, swapped in


class RosterOverrideFields(BaseModel):
    kind: OverrideKind
    starts_at: Instant
    ends_at: Instant
    reason: PlainText | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _ordered(self) -> RosterOverrideFields:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at - self.starts_at > MAX_OVERRIDE:
            raise ValueError(f"an override may span at most {MAX_OVERRIDE.days} days")
        return self


class RosterOverride(RosterOverrideFields):
    id: str
    agent_id: str


class Shift(BaseModel):
    """A weekly shift in the agent's region time zone; `end <= start` means it runs past midnight."""

    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], max_length=7, description="ISO weekdays, Monday=1"
    )
    start: LocalTime = time(8, 0)
    end: LocalTime = time(17, 0)

    def covers(self, at: datetime, tz: ZoneInfo) -> bool:
        """Whether the weekly shift (no overrides) covers `at`: the same windows the roster uses."""
        return bool(shift_windows(self, tz.key, [], at, at + timedelta(microseconds=1)))


class ShiftPatternFields(BaseModel):
    """A region's shared shift pattern: one list of shifts per week of the rotation.

    Week 1 starts on `anchor` (a Monday) and the cycle repeats after the last week; an empty
    week is a week off. Times are read in the region's time zone.
    """

    name: PlainText = Field(min_length=1, max_length=200)
    region_id: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,31}$")
    anchor: date = Field(description="the Monday on which week 1 of the rotation starts")
    weeks: list[list[Shift]] = Field(min_length=1, max_length=MAX_ROTATION_WEEKS)

    @field_validator("anchor")
    @classmethod
    def _monday(cls, value: date) -> date:
        if value.isoweekday() != 1:
            raise ValueError(f"anchor must be a Monday, {value.isoformat()} is not")
        return value

    @field_validator("weeks")
    @classmethod
    def _some_work(cls, weeks: list[list[Shift]]) -> list[list[Shift]]:
        if not any(shift.days for week in weeks for shift in week):
            raise ValueError("a shift pattern needs at least one shift on at least one day")
        if any(len(week) > 7 for week in weeks):
            raise ValueError("a week holds at most 7 shifts")
        return weeks


class ShiftPattern(ShiftPatternFields):
    id: str = Field(pattern=PATTERN_ID)
    agents: list[str] = Field(default_factory=list, description="agents working this pattern")


class Rotation(BaseModel):
    """A shift pattern as one agent works it: `offset` weeks ahead of the pattern's week 1."""

    pattern_id: str
    anchor: date
    weeks: list[list[Shift]]
    offset: int = 0

    @classmethod
    def of(cls, pattern: ShiftPatternFields, pattern_id: str, offset: int) -> Rotation:
        return cls(pattern_id=pattern_id, anchor=pattern.anchor, weeks=pattern.weeks, offset=offset)

    def week_of(self, day: date) -> list[Shift]:
        monday = day - timedelta(days=day.isoweekday() - 1)
        index = ((monday - self.anchor).days // 7 + self.offset) % len(self.weeks)
        return self.weeks[index]


class RotationCalendar(BusinessCalendar):
    """A rotation read as a calendar: each date opens with the shifts of its week in the cycle.

    A shift that runs past midnight belongs to the date it starts on, as with weekly hours, so
    Sunday's night shift of a night week still ends on the Monday of a week off.
    """

    rotation: Rotation

    def _has_hours(self) -> bool:
        return True

    def _hours_on(self, day: date) -> list[tuple[time, time]]:
        return [
            (shift.start, shift.end) for shift in self.rotation.week_of(day) if day.isoweekday() in shift.days
        ]


# What an agent works: their own weekly shift, or a shared pattern's rotation.
Schedule = Shift | Rotation


def _union(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    result: list[Interval] = []
    for start, end in intervals:
        pieces = [(start, end)]
        for h_start, h_end in holes:
            next_pieces = []
            for p_start, p_end in pieces:
                if h_end <= p_start or h_start >= p_end:
                    next_pieces.append((p_start, p_end))
                    continue
                if p_start < h_start:
                    next_pieces.append((p_start, h_start))
                if h_end < p_end:
                    next_pieces.append((h_end, p_end))
            pieces = next_pieces
        result.extend(pieces)
    return result


def _clip(intervals: list[Interval], start: datetime, end: datetime) -> list[Interval]:
    return [(max(s, start), min(e, end)) for s, e in intervals if e > start and s < end]


def shift_calendar(schedule: Schedule, timezone: str) -> BusinessCalendar | None:
    """The schedule as a calendar; None when it never works."""
    if isinstance(schedule, Rotation):
        return RotationCalendar(id="rotation", name="rotation", timezone=timezone, rotation=schedule)
    if not schedule.days:
        return None
    return BusinessCalendar(
        id="shift",
        name="shift",
        timezone=timezone,
        hours=[
            OpeningHours(day=day, start=schedule.start, end=schedule.end)
            for day in sorted(set(schedule.days))
        ],
    )


def shift_windows(
    schedule: Schedule, timezone: str, overrides: list[RosterOverrideFields], start: datetime, end: datetime
) -> list[Interval]:
    """When the agent is on shift between two instants (UTC, merged)."""
    calendar = shift_calendar(schedule, timezone)
    base = calendar.windows(start, end) if calendar else []
    extra = _clip([(o.starts_at, o.ends_at) for o in overrides if o.kind is OverrideKind.EXTRA], start, end)
    off = [(o.starts_at, o.ends_at) for o in overrides if o.kind is OverrideKind.OFF]
    # Time off wins over everything, extra cover included: someone on sick leave takes no tickets.
    return _subtract(_union(base + extra), off)


def on_shift(schedule: Schedule, timezone: str, overrides: list[RosterOverrideFields], at: datetime) -> bool:
    return bool(shift_windows(schedule, timezone, overrides, at, at + timedelta(microseconds=1)))


def shift_end(
    schedule: Schedule, timezone: str, overrides: list[RosterOverrideFields], at: datetime
) -> datetime | None:
    """When the stretch of shift covering `at` ends: `at` if off shift, None if it never ends."""
    horizon = at + SHIFT_LOOKAHEAD
    windows = shift_windows(schedule, timezone, overrides, at, horizon)
    if not windows or windows[0][0] > at:
        return at
    end = windows[0][1]
    return None if end >= horizon else end


def coverage_gaps(covered: list[list[Interval]], start: datetime, end: datetime) -> list[Interval]:
    """The parts of [start, end) that none of the given agents' windows cover."""
    everyone = _union([w for windows in covered for w in windows])
    return _subtract([(start, end)], everyone)
