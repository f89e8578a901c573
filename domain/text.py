"""Text (and wall-clock times) accepted from the outside world."""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, WithJsonSchema

# PostgreSQL cannot store NUL in text or jsonb, and no other C0 control has a place in a ticket;
# tab, line feed and carriage return stay.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A lone surrogate is not a character: JSON lets it through, UTF-8 (and PostgreSQL) cannot hold it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("text must not contain control characters (such as NUL)")
    if _SURROGATE.search(value):
        raise ValueError("text must be valid Unicode (it contains a lone surrogate)")
    return value


PlainText = Annotated[str, AfterValidator(_printable)]


# A wall-clock time read in some time zone (a shift, opening hours), written "08:30:00". JSON
# Schema's "time" format is RFC 3339's full-time, which needs an offset these times do not have.
LocalTime = Annotated[
    time,
    WithJsonSchema({"type": "string", "format": "partial-time", "description": "local time, HH:MM[:SS]"}),
]


EARLIEST_YEAR, LATEST_YEAR = 1900, 2999


def _plausible(value: datetime) -> datetime:
    # Year 1 or 9999 with an offset is not even a datetime in UTC; nothing here happens then.
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"dates must fall between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_plausible)]
"""An ISO 8601 date and time with an offset, in a plausible year."""
