"""Import closed days from an iCalendar feed (RFC 5545), e.g. a company holiday calendar."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import icalendar

from domain.calendars import CalendarException

# A feed with more closed days than this is almost certainly not a holiday list.
MAX_IMPORTED_DAYS = 2_000


def closed_days_from_ical(text: str) -> list[CalendarException]:
    """Each all-day VEVENT closes the days it spans; timed events are not closures and are skipped."""
    try:
        feed = icalendar.Calendar.from_ical(text)
    except ValueError as exc:
        raise ValueError(f"not an iCalendar feed: {exc}") from exc
    closed: dict[date, CalendarException] = {}
    for event in feed.walk("VEVENT"):
        start = event.decoded("DTSTART", None)
        if not isinstance(start, date) or isinstance(start, datetime):
            continue
        end = event.decoded("DTEND", None)
        duration = event.decoded("DURATION", None)
        if not (isinstance(end, date) and not isinstance(end, datetime)):
            # RFC 5545: DURATION may stand in for DTEND; an all-day event without either lasts one day.
            days = duration.days if isinstance(duration, timedelta) and duration.days > 0 else 1
            end = start + timedelta(days=days)
        label = str(event.get("SUMMARY", "")) or None
        day = start
        while day < end:
            closed[day] = CalendarException(date=day, hours=[], label=label)
            if len(closed) > MAX_IMPORTED_DAYS:
                raise ValueError(f"the feed closes more than {MAX_IMPORTED_DAYS} days")
            day += timedelta(days=1)
    return [closed[d] for d in sorted(closed)]
