"""Rate limits as token buckets: pure arithmetic, the time is passed in.

A limit such as "120/minute" is a bucket of 120 tokens refilled at 120 per minute: a client may
burst up to 120 requests, then goes at 2 per second. A request that finds less than one token is
refused and told exactly when the next token arrives (`Retry-After`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

OFF = "off"
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_NOTATION = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    amount: int  # the burst: how many requests a rested client may make at once
    period: float  # seconds in which `amount` tokens come back

    @property
    def per_second(self) -> float:
        return self.amount / self.period


def parse_rate(text: str) -> Rate | None:
    """`"120/minute"`, `"10/30 seconds"`, `"5 per second"`; `"off"` is no limit (None)."""
    if text.strip().lower() == OFF:
        return None
    match = _NOTATION.match(text)
    if match is None or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ValueError(f"a rate limit looks like '120/minute' or '10/30 seconds' (or 'off'), not {text!r}")
    return Rate(int(match.group(1)), int(match.group(2) or 1) * _PERIODS[match.group(3).lower()])


def check_rate(text: str) -> str:
    """For settings: refuse a malformed limit when the process starts, not at the first request."""
    parse_rate(text)
    return text


class Buckets:
    """One token bucket per key (a token, an address, a survey link), all with the same rate.

    A bucket that has refilled completely is the same as no bucket, so `prune` drops those and
    memory holds only the keys seen within one refill period.
    """

    def __init__(self, rate: Rate, *, prune_every: int = 10_000):
        self.rate = rate
        self._tokens: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._prune_every = prune_every
        self._since_prune = 0

    def take(self, key: str, now: float) -> float:
        """Spends one token: 0.0 when the request may go on, else seconds until it may retry."""
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self.prune(now)
        tokens, at = self._tokens.get(key, (float(self.rate.amount), now))
        tokens = min(float(self.rate.amount), tokens + max(0.0, now - at) * self.rate.per_second)
        if tokens >= 1.0:
            self._tokens[key] = (tokens - 1.0, now)
            return 0.0
        self._tokens[key] = (tokens, now)
        return (1.0 - tokens) / self.rate.per_second

    def wait(self, key: str, now: float) -> float:
        """Seconds until `take` would succeed, spending nothing (0.0: now)."""
        tokens, at = self._tokens.get(key, (float(self.rate.amount), now))
        tokens = min(float(self.rate.amount), tokens + max(0.0, now - at) * self.rate.per_second)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate.per_second

    def prune(self, now: float) -> None:
        self._since_prune = 0
        full = self.rate.period
        self._tokens = {k: (t, at) for k, (t, at) in self._tokens.items() if now - at < full}

    def __len__(self) -> int:
        return len(self._tokens)


def retry_after_header(wait: float) -> str:
    """Whole seconds, never 0: a client that retries at once would only be refused again."""
    return str(max(1, math.ceil(wait)))
