"""Text accepted from the outside world."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

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
