"""Rosters: when each agent is on shift, with overrides (sick leave, swaps, extra cover).

An agent's weekly shift is read as a business calendar in their region's time zone, so shift
windows get the same DST and midnight handling as SLA maths. Overrides then cut time out
(`off`) or add it (`extra`). Coverage gaps are what is left of a span when every qualified
agent's windows are taken away.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from domain.calendars import BusinessCalendar, OpeningHours
from domain.text import PlainText

Interval = tuple[datetime, datetime]
# How far ahead a shift's end is looked for; a shift running longer is treated as continuous.
SHIFT_LOOKAHEAD = timedelta(days=8)
MAX_OVERRIDE = timedelta(days=120)


class OverrideKind(StrEnum):
    OFF = "off"  # sick leave, holiday, swapped away
    EXTRA = "extra"  # extra cover, swapped in


class RosterOverrideFields(BaseModel):
    kind: OverrideKind
    starts_at: AwareDatetime
    ends_at: AwareDatetime
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
    start: time = time(8, 0)
    end: time = time(17, 0)

    def covers(self, at: datetime, tz: ZoneInfo) -> bool:
        """Whether the weekly shift (no overrides) covers `at`: the same windows the roster uses."""
        return bool(shift_windows(self, tz.key, [], at, at + timedelta(microseconds=1)))


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


def shift_calendar(shift: Shift, timezone: str) -> BusinessCalendar:
    return BusinessCalendar(
        id="shift",
        name="shift",
        timezone=timezone,
        hours=[OpeningHours(day=day, start=shift.start, end=shift.end) for day in sorted(set(shift.days))],
    )


def shift_windows(
    shift: Shift, timezone: str, overrides: list[RosterOverrideFields], start: datetime, end: datetime
) -> list[Interval]:
    """When the agent is on shift between two instants (UTC, merged)."""
    base = shift_calendar(shift, timezone).windows(start, end) if shift.days else []
    extra = _clip([(o.starts_at, o.ends_at) for o in overrides if o.kind is OverrideKind.EXTRA], start, end)
    off = [(o.starts_at, o.ends_at) for o in overrides if o.kind is OverrideKind.OFF]
    # Time off wins over everything, extra cover included: someone on sick leave takes no tickets.
    return _subtract(_union(base + extra), off)


def on_shift(shift: Shift, timezone: str, overrides: list[RosterOverrideFields], at: datetime) -> bool:
    return bool(shift_windows(shift, timezone, overrides, at, at + timedelta(microseconds=1)))


def shift_end(
    shift: Shift, timezone: str, overrides: list[RosterOverrideFields], at: datetime
) -> datetime | None:
    """When the stretch of shift covering `at` ends: `at` if off shift, None if it never ends."""
    horizon = at + SHIFT_LOOKAHEAD
    windows = shift_windows(shift, timezone, overrides, at, horizon)
    if not windows or windows[0][0] > at:
        return at
    end = windows[0][1]
    return None if end >= horizon else end


def coverage_gaps(covered: list[list[Interval]], start: datetime, end: datetime) -> list[Interval]:
    """The parts of [start, end) that none of the given agents' windows cover."""
    everyone = _union([w for windows in covered for w in windows])
    return _subtract([(start, end)], everyone)
