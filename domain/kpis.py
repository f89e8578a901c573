"""Support KPIs, computed from the ticket timeline (the definitions are in docs/kpis.md).

Pure and deterministic. `facts_from_timeline` turns one ticket's events into its `TicketFacts`;
an `Accumulator` adds facts up into counts, sums and duration histograms, and `metric_values`
turns an accumulator into the published numbers. The database (db/kpis.py) fills accumulators
from `ticket_facts` and the daily rollups instead of from Python objects, and ends in the same
`metric_values`, so every screen computes each number the same way.

Percentiles are read from a fixed logarithmic grid (`bin_of`, `bin_value`) rather than the raw
durations: that is what lets days of history be added up in advance, and the result is the same
whether it comes from raw facts or from rollups.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from domain.tickets import TimelineEvent

# --- vocabulary ------------------------------------------------------------------------------

DIMENSIONS = ("region", "module", "language", "agent", "priority", "channel")
SLA_TARGETS = frozenset({"first_response", "next_response", "resolution", "periodic_update"})
REPEAT_DAYS = (1, 7, 14, 30)  # the repeat-issue windows kept in the rollups
SATISFIED_SCORE = 4


class Bucket(StrEnum):
    NONE = "none"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"


# --- the duration grid -----------------------------------------------------------------------

BINS_PER_DOUBLING = 16
# Bin 0 holds durations under a second; bin k >= 1 holds [2^((k-1)/16), 2^(k/16)) seconds; the
# last bin also holds everything from 2^24 s (194 days) on.
HISTOGRAM_BINS = 24 * BINS_PER_DOUBLING + 2


def bin_of(seconds: float) -> int:
    if seconds < 1:
        return 0
    return min(HISTOGRAM_BINS - 1, 1 + math.floor(BINS_PER_DOUBLING * math.log2(seconds) + 1e-9))


def bin_value(index: int) -> float:
    """The duration a bin stands for: its geometric centre (within 2.2 % of every value in it)."""
    if index == 0:
        return 0.0
    return 2 ** ((index - 0.5) / BINS_PER_DOUBLING)


BIN_VALUES = [bin_value(i) for i in range(HISTOGRAM_BINS)]


def grid(seconds: float) -> float:
    """A duration as the percentiles see it."""
    return BIN_VALUES[bin_of(seconds)]


Histogram = dict[int, float]  # bin -> count, only the bins with something in them


class Cumulative:
    """A histogram's non-empty bins in order with running counts: any percentile in O(log n)."""

    __slots__ = ("bins", "running", "total")

    def __init__(self, histogram: Histogram):
        # Empty bins may stay: they never raise the running count, so no rank lands on them.
        self.bins = sorted(histogram)
        self.running = list(itertools.accumulate(map(histogram.__getitem__, self.bins)))
        self.total = round(self.running[-1]) if self.running else 0

    def value(self, k: int) -> float:
        """The k-th smallest duration (from 0) as the grid sees it."""
        return BIN_VALUES[self.bins[bisect.bisect_right(self.running, k + 0.5)]]

    def percentile(self, fraction: float) -> float | None:
        """PostgreSQL's percentile_cont over the grid values: linear between the two closest ranks."""
        if self.total == 0:
            return None
        rank = fraction * (self.total - 1)
        low = int(rank)
        low_value = self.value(low)
        if rank == low:
            return low_value
        return low_value + (rank - low) * (self.value(low + 1) - low_value)


def percentile(histogram: Histogram, fraction: float) -> float | None:
    return Cumulative(histogram).percentile(fraction)


# --- business time ---------------------------------------------------------------------------


class OpenWindows:
    """Open windows of a business calendar with running totals: business time between two
    instants in O(log n), for facts of many tickets on one calendar."""

    def __init__(self, windows: Sequence[tuple[datetime, datetime]]):
        self.starts = [start for start, _ in windows]
        self.ends = [end for _, end in windows]
        self.before: list[float] = []  # open seconds before each window
        total = 0.0
        for start, end in windows:
            self.before.append(total)
            total += (end - start).total_seconds()

    def _open_until(self, at: datetime) -> float:
        i = bisect.bisect_right(self.starts, at) - 1
        if i < 0:
            return 0.0
        return self.before[i] + (min(at, self.ends[i]) - self.starts[i]).total_seconds()

    def between(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        return self._open_until(end) - self._open_until(start)


def _business(clock: OpenWindows | None, start: datetime, end: datetime) -> float:
    """Seconds that count on the ticket's SLA calendar; without one, every second counts."""
    if clock is None:
        return max((end - start).total_seconds(), 0.0)
    return clock.between(start, end)


# --- per-ticket facts ------------------------------------------------------------------------


class RegionLeg(BaseModel):
    """A stretch of the ticket's open life during which one region was responsible for it."""

    region: str | None
    agent_id: str | None = Field(description="the first agent who held the ticket in this leg")
    started_at: datetime
    ended_at: datetime | None = Field(description="None: the region still holds the open ticket")
    held_seconds: float = Field(description="open time in the leg, resolved stretches excluded")
    owed_from: datetime | None = Field(description="the first instant in the leg the customer waited")
    answered_at: datetime | None = None
    response_seconds: float | None = None
    response_business_seconds: float | None = None


class ResponseWait(BaseModel):
    """A customer message after the first response, waiting for the next public answer."""

    started_at: datetime
    ended_at: datetime | None = Field(description="answered, or ended by a self-service resolution")
    answered: bool = False
    seconds: float | None = None
    business_seconds: float | None = None
    breached: bool = False


class OpenPeriod(BaseModel):
    opened_at: datetime
    closed_at: datetime | None = None


class TicketFacts(BaseModel):
    ticket_id: int
    customer_id: str
    last_seq: int
    created_at: datetime
    channel: str
    language: str | None = None
    module: str | None = None
    priority: str | None = None
    region: str | None = Field(default=None, description="the region holding it last (as `tickets`)")
    agent_id: str | None = Field(default=None, description="the agent holding it last")
    calendar_id: str | None = None
    first_response_at: datetime | None = None
    first_response_seconds: float | None = None
    first_response_business_seconds: float | None = None
    resolved_at: datetime | None = Field(default=None, description="the last resolution, if it stands")
    resolution_seconds: float | None = None
    resolution_business_seconds: float | None = None
    pending_seconds: float = 0.0
    resolutions: int = 0
    reopens: int = 0
    public_replies: int = 0
    agent_resolved: bool = False
    self_service: bool = False
    first_contact: bool = False
    csat_sent: int = 0
    csat_scores: list[int] = Field(default_factory=list)
    handoffs: int = 0
    escalations: int = 0
    sla: dict[str, str] = Field(default_factory=dict, description="target -> met or breached")
    waits: list[ResponseWait] = Field(default_factory=list)
    legs: list[RegionLeg] = Field(default_factory=list)
    open_periods: list[OpenPeriod] = Field(default_factory=list)
    previous_same_issue_at: datetime | None = Field(
        default=None, description="the customer's previous ticket of this module (set by the database)"
    )

    def dimension(self, name: str) -> str | None:
        return self.agent_id if name == "agent" else getattr(self, name)

    def is_repeat(self, days: int) -> bool:
        previous = self.previous_same_issue_at
        return previous is not None and self.created_at - previous <= timedelta(days=days)


class _Segment:
    """Open time with one holder (or none yet), and whether the customer waited in it."""

    __slots__ = ("agent", "answered_at", "end", "owed_from", "region", "start")

    def __init__(self, start: datetime, region: str | None, agent: str | None, waiting: bool):
        self.start, self.end = start, None
        self.region, self.agent = region, agent
        self.owed_from = start if waiting else None
        self.answered_at: datetime | None = None


def facts_from_timeline(
    events: Sequence[TimelineEvent],
    *,
    ticket_id: int,
    customer_id: str,
    clock: OpenWindows | None = None,
    calendar_id: str | None = None,
    sla_targets: frozenset[str] = SLA_TARGETS,
) -> TicketFacts:
    """One ticket's facts from its whole timeline (ordered by seq, starting with `created`).

    `clock` counts business time on the ticket's SLA calendar; `sla_targets` are the targets its
    policy defines (a target without a clock is neither met nor breached).
    """
    events = sorted(events, key=lambda e: e.seq)
    if not events or events[0].kind != "created":
        raise ValueError(f"ticket {ticket_id}: a timeline starts with its 'created' event")
    created = events[0]
    f = TicketFacts(
        ticket_id=ticket_id,
        customer_id=customer_id,
        last_seq=events[-1].seq,
        created_at=created.at,
        channel=created.data.get("channel") or "api",
        calendar_id=calendar_id,
        open_periods=[OpenPeriod(opened_at=created.at)],
    )
    triage_region: str | None = None
    holder: tuple[str | None, str | None] = (None, None)  # (region, agent)
    last_holder: tuple[str | None, str | None] = (None, None)
    is_open = True
    first_wait_open = True  # the customer waits for a first response from the start
    wait: ResponseWait | None = None
    message_while_resolved: datetime | None = None
    pending_since: datetime | None = None
    pending: list[tuple[datetime, datetime]] = []
    breached: set[str] = set()
    messages_after_first_reply = 0
    replies_before_resolution = 0
    segments = [_Segment(created.at, None, None, waiting=True)]

    def waiting() -> bool:
        return first_wait_open or wait is not None

    def new_segment(at: datetime) -> None:
        segments[-1].end = at
        segments.append(_Segment(at, holder[0], holder[1], waiting()))

    def start_wait(at: datetime) -> None:
        nonlocal wait
        wait = ResponseWait(started_at=at, ended_at=None)
        f.waits.append(wait)
        seg = segments[-1]
        if seg.owed_from is None:
            seg.owed_from = max(at, seg.start)  # a reopening message waits from the reopen on

    def answer(at: datetime) -> None:
        nonlocal first_wait_open, wait
        if first_wait_open:
            first_wait_open = False
            f.first_response_at = at
            f.first_response_seconds = (at - f.created_at).total_seconds()
            f.first_response_business_seconds = _business(clock, f.created_at, at)
        elif wait is not None:
            wait.ended_at, wait.answered = at, True
            wait.seconds = (at - wait.started_at).total_seconds()
            wait.business_seconds = _business(clock, wait.started_at, at)
            wait = None
        else:
            return
        seg = segments[-1]
        if seg.owed_from is not None and seg.answered_at is None:
            seg.answered_at = at

    for e in events[1:]:
        data = e.data
        if e.kind == "triaged":
            f.language, f.module, f.priority = data.get("language"), data.get("module"), data.get("priority")
            triage_region = e.region
        elif e.kind == "module_changed":
            f.module = data.get("to")
        elif e.kind == "priority_changed":
            f.priority = data.get("to")
        elif e.kind in ("assigned", "handed_off"):
            if e.kind == "assigned":
                holder = (data.get("agent_region"), data.get("agent_id"))
            else:
                f.handoffs += 1
                holder = (data.get("to_region"), data.get("to_agent_id"))
            if holder[1] is not None:
                last_holder = holder
            if is_open:
                new_segment(e.at)
        elif e.kind == "customer_message":
            if data.get("after_close") or first_wait_open or wait is not None:
                continue  # closed for good, or the customer adds to what still waits for an answer
            if is_open:
                messages_after_first_reply += 1
                start_wait(e.at)
            else:
                message_while_resolved = e.at  # it waits only if it reopens the ticket
        elif e.kind == "agent_reply" and not e.internal:
            f.public_replies += 1
            if is_open:
                replies_before_resolution += 1
                answer(e.at)
        elif e.kind == "status_changed":
            if data.get("to") == "pending_customer" and pending_since is None:
                pending_since = e.at
            elif data.get("from") == "pending_customer" and pending_since is not None:
                pending.append((pending_since, e.at))
                pending_since = None
        elif e.kind == "resolved":
            if not is_open:
                continue
            f.resolutions += 1
            f.self_service = bool(data.get("self_service"))
            if f.self_service:
                first_wait_open = False  # nobody answered, and nobody owes an answer any more
                if wait is not None:
                    wait.ended_at, wait = e.at, None
            else:
                answer(e.at)
            if pending_since is not None:
                pending.append((pending_since, e.at))
                pending_since = None
            is_open = False
            segments[-1].end = e.at
            f.open_periods[-1].closed_at = e.at
            f.resolved_at = e.at
        elif e.kind == "reopened":
            if is_open:
                continue
            f.reopens += 1
            is_open, holder = True, (None, None)
            f.resolved_at = None
            f.open_periods.append(OpenPeriod(opened_at=e.at))
            segments.append(_Segment(e.at, None, None, waiting()))
            if message_while_resolved is not None:
                start_wait(message_while_resolved)
                message_while_resolved = None
            replies_before_resolution = 0
        elif e.kind == "sla_breached":
            target = data.get("target")
            if target == "next_response":
                if wait is not None:
                    wait.breached = True
            elif target:
                breached.add(target)
        elif e.kind == "escalated" and data.get("level") == 1:
            f.escalations += 1
        elif e.kind == "csat_sent":
            f.csat_sent += 1
        elif e.kind == "csat_received" and data.get("score") is not None:
            f.csat_scores.append(int(data["score"]))

    f.region = last_holder[0] or triage_region
    f.agent_id = last_holder[1]
    if f.resolved_at is not None:
        f.resolution_seconds = (f.resolved_at - f.created_at).total_seconds()
        running = _subtract(
            [(p.opened_at, p.closed_at) for p in f.open_periods if p.closed_at is not None], pending
        )
        f.resolution_business_seconds = sum(_business(clock, a, b) for a, b in running)
        f.pending_seconds = sum((b - a).total_seconds() for a, b in pending)
        f.agent_resolved = not f.self_service
        f.first_contact = (
            f.agent_resolved
            and f.reopens == 0
            and replies_before_resolution <= 1
            and messages_after_first_reply == 0
        )
    f.legs = _legs(segments, triage_region, clock)
    f.sla = _sla_verdicts(f, breached, sla_targets)
    if "next_response" not in sla_targets:
        for w in f.waits:
            w.breached = False
    return f


def _subtract(
    spans: list[tuple[datetime, datetime]], holes: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    result = []
    for start, end in spans:
        cursor = start
        for hole_start, hole_end in sorted(holes):
            if hole_end <= cursor or hole_start >= end:
                continue
            if hole_start > cursor:
                result.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def _legs(segments: list[_Segment], triage_region: str | None, clock: OpenWindows | None) -> list[RegionLeg]:
    # Time nobody held the ticket (queued after intake, a reopen or a handoff to nobody) belongs
    # to the region that takes it next: that is who the customer was waiting for.
    segments = [s for s in segments if s.end is None or s.end > s.start or s.answered_at is not None]
    known: list[tuple[str | None, str | None]] = []
    following: tuple[str | None, str | None] = (None, None)
    for seg in reversed(segments):
        if seg.agent is not None or seg.region is not None:
            following = (seg.region, seg.agent)
        known.append(following)
    known.reverse()
    preceding: tuple[str | None, str | None] = (triage_region, None)
    legs: list[RegionLeg] = []
    for seg, (region, agent) in zip(segments, known, strict=True):
        if seg.region is not None or seg.agent is not None:
            region, agent = seg.region, seg.agent
        elif region is None and agent is None:
            region, agent = preceding
        preceding = (region, agent)
        held = (seg.end - seg.start).total_seconds() if seg.end is not None else 0.0
        if legs and legs[-1].region == region:
            leg = legs[-1]
            leg.ended_at = seg.end
            leg.held_seconds += held
            leg.agent_id = leg.agent_id or agent
            leg.owed_from = leg.owed_from or seg.owed_from
            leg.answered_at = leg.answered_at or seg.answered_at
        else:
            legs.append(
                RegionLeg(
                    region=region,
                    agent_id=agent,
                    started_at=seg.start,
                    ended_at=seg.end,
                    held_seconds=held,
                    owed_from=seg.owed_from,
                    answered_at=seg.answered_at,
                )
            )
    for leg in legs:
        if leg.owed_from is not None and leg.answered_at is not None:
            leg.response_seconds = (leg.answered_at - leg.owed_from).total_seconds()
            leg.response_business_seconds = _business(clock, leg.owed_from, leg.answered_at)
    return legs


def _sla_verdicts(f: TicketFacts, breached: set[str], targets: frozenset[str]) -> dict[str, str]:
    verdicts = {}
    # Any resolution stops the first-response clock, a self-service one included (as the workflow).
    answered = f.first_response_at is not None or f.resolutions > 0
    finished = {"first_response": answered, "resolution": f.resolved_at is not None}
    finished["periodic_update"] = finished["resolution"]
    for target in ("first_response", "resolution", "periodic_update"):
        if target in breached:
            verdicts[target] = "breached"
        elif target in targets and finished[target]:
            verdicts[target] = "met"
    return verdicts


def is_open_at(f: TicketFacts, at: datetime) -> bool:
    """In the backlog at `at`: opened before it and not resolved before it."""
    return any(p.opened_at < at and (p.closed_at is None or p.closed_at >= at) for p in f.open_periods)


def link_repeats(facts: Iterable[TicketFacts]) -> None:
    """Sets `previous_same_issue_at` (as db/kpis.py does) over one complete set of tickets."""
    earlier: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for f in sorted(facts, key=lambda f: (f.created_at, f.ticket_id)):
        if f.module is None:
            f.previous_same_issue_at = None
            continue
        seen = earlier[(f.customer_id, f.module)]
        i = bisect.bisect_left(seen, f.created_at)  # a twin of the same instant is no repeat
        f.previous_same_issue_at = seen[i - 1] if i else None
        seen.append(f.created_at)


# --- adding facts up -------------------------------------------------------------------------

# Additive figures: rollups store them per day and group, and any set of days adds up.
FIELDS = (
    "tickets",
    "first_responses",
    "first_response_s",
    "first_response_bs",
    "resolved",
    "resolution_s",
    "resolution_bs",
    "ever_resolved",
    "reopened",
    "reopens",
    "agent_resolved",
    "first_contact",
    "self_service",
    "csat_sent",
    "csat_received",
    "csat_score",
    "csat_satisfied",
    *(f"repeat_{days}d" for days in REPEAT_DAYS),
    "handoffs",
    "handed_off",
    "escalations",
    "escalated",
    "fr_met",
    "fr_breached",
    "res_met",
    "res_breached",
    "pu_met",
    "pu_breached",
    "nr_met",
    "nr_breached",
    "waits",
    "next_response_s",
    "next_response_bs",
    "legs",
    "legs_owed",
    "legs_answered",
    "leg_response_s",
    "leg_response_bs",
    "legs_ended",
    "leg_hold_s",
    "backlog",
    "backlog_created_epoch",
)
# Duration distributions with percentiles, each a histogram over the grid.
HISTOGRAMS = (
    "first_response",
    "first_response_business",
    "next_response",
    "next_response_business",
    "resolution",
    "resolution_business",
    "region_response",
    "region_response_business",
)
# What a ticket's legs add (grouped by the leg's region and agent rather than the ticket's).
LEG_FIELDS = (
    "legs",
    "legs_owed",
    "legs_answered",
    "leg_response_s",
    "leg_response_bs",
    "legs_ended",
    "leg_hold_s",
)
LEG_HISTOGRAMS = ("region_response", "region_response_business")


class Accumulator:
    """Counts, sums and histograms of one group in one bucket."""

    __slots__ = ("cumulative", "fields", "histograms")

    def __init__(self) -> None:
        # A field never added to reads as 0; queries fill only the fields their metrics read.
        self.fields: dict[str, float] = defaultdict(float)
        self.histograms: dict[str, Histogram] = {}
        self.cumulative: dict[str, Cumulative] = {}  # of finished histograms, for their percentiles

    def histogram(self, name: str) -> Histogram:
        if name not in self.histograms:
            self.histograms[name] = {}
        return self.histograms[name]

    def _observe(self, name: str, seconds: float | None) -> None:
        if seconds is not None:
            counts = self.histogram(name)
            b = bin_of(seconds)
            counts[b] = counts.get(b, 0) + 1

    def merge(self, other: Accumulator) -> None:
        for name, value in other.fields.items():
            self.fields[name] += value
        for name, counts in other.histograms.items():
            self.add_histogram(name, counts)

    def add_histogram(self, name: str, counts: Histogram) -> None:
        mine = self.histograms.get(name)
        if mine is None:
            self.histograms[name] = counts
            return
        for b, n in counts.items():
            mine[b] = mine.get(b, 0) + n

    def add_ticket(self, f: TicketFacts) -> None:
        """The ticket's own figures (everything but its legs and the backlog)."""
        v = self.fields
        v["tickets"] += 1
        if f.first_response_seconds is not None:
            v["first_responses"] += 1
            v["first_response_s"] += f.first_response_seconds
            v["first_response_bs"] += f.first_response_business_seconds
            self._observe("first_response", f.first_response_seconds)
            self._observe("first_response_business", f.first_response_business_seconds)
        if f.resolution_seconds is not None:
            v["resolved"] += 1
            v["resolution_s"] += f.resolution_seconds
            v["resolution_bs"] += f.resolution_business_seconds
            self._observe("resolution", f.resolution_seconds)
            self._observe("resolution_business", f.resolution_business_seconds)
        v["ever_resolved"] += f.resolutions > 0
        v["reopened"] += f.reopens > 0
        v["reopens"] += f.reopens
        v["agent_resolved"] += f.agent_resolved
        v["first_contact"] += f.first_contact
        v["self_service"] += f.self_service and f.resolved_at is not None
        v["csat_sent"] += f.csat_sent
        v["csat_received"] += len(f.csat_scores)
        v["csat_score"] += sum(f.csat_scores)
        v["csat_satisfied"] += sum(1 for s in f.csat_scores if s >= SATISFIED_SCORE)
        for days in REPEAT_DAYS:
            v[f"repeat_{days}d"] += f.is_repeat(days)
        v["handoffs"] += f.handoffs
        v["handed_off"] += f.handoffs > 0
        v["escalations"] += f.escalations
        v["escalated"] += f.escalations > 0
        for target, prefix in (("first_response", "fr"), ("resolution", "res"), ("periodic_update", "pu")):
            verdict = f.sla.get(target)
            if verdict:
                v[f"{prefix}_{verdict}"] += 1
        for w in f.waits:
            v["nr_breached"] += w.breached
            v["nr_met"] += w.answered and not w.breached
            if w.answered:
                v["waits"] += 1
                v["next_response_s"] += w.seconds
                v["next_response_bs"] += w.business_seconds
                self._observe("next_response", w.seconds)
                self._observe("next_response_business", w.business_seconds)

    def add_leg(self, leg: RegionLeg) -> None:
        v = self.fields
        v["legs"] += 1
        v["legs_owed"] += leg.owed_from is not None
        if leg.ended_at is not None:
            v["legs_ended"] += 1
            v["leg_hold_s"] += leg.held_seconds
        if leg.response_seconds is not None:
            v["legs_answered"] += 1
            v["leg_response_s"] += leg.response_seconds
            v["leg_response_bs"] += leg.response_business_seconds
            self._observe("region_response", leg.response_seconds)
            self._observe("region_response_business", leg.response_business_seconds)

    def add_backlog(self, count: float, created_epoch_sum: float) -> None:
        self.fields["backlog"] += count
        self.fields["backlog_created_epoch"] += created_epoch_sum

    def is_empty(self) -> bool:
        # Counts, not sums: taking a changed ticket's old facts away may leave a sum at 1e-12.
        return not (self.fields.get("tickets") or self.fields.get("legs") or self.fields.get("backlog"))


# --- the published numbers -------------------------------------------------------------------


class Metric(BaseModel):
    name: str
    unit: str
    description: str


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


_DISTRIBUTIONS = {
    # histogram -> (count field, sum field, description)
    "first_response": ("first_responses", "first_response_s", "first response, calendar time"),
    "first_response_business": ("first_responses", "first_response_bs", "first response, business time"),
    "next_response": ("waits", "next_response_s", "next response to each customer message"),
    "next_response_business": ("waits", "next_response_bs", "next response, business time"),
    "resolution": ("resolved", "resolution_s", "creation to last resolution, calendar time"),
    "resolution_business": ("resolved", "resolution_bs", "resolution, business time, pauses excluded"),
    "region_response": ("legs_answered", "leg_response_s", "each region's own first response in its leg"),
    "region_response_business": ("legs_answered", "leg_response_bs", "region response, business time"),
}

_SIMPLE: dict[str, tuple[str, str, Any]] = {
    # name -> (unit, description, how)
    "tickets": ("count", "tickets created", lambda v, r: v["tickets"]),
    "first_responses": ("count", "tickets with a first response", lambda v, r: v["first_responses"]),
    "next_responses": ("count", "customer messages answered", lambda v, r: v["waits"]),
    "resolved": ("count", "tickets resolved (and not reopened since)", lambda v, r: v["resolved"]),
    "first_contact_resolution_rate": (
        "ratio",
        "resolved by an agent on first contact / resolved by an agent",
        lambda v, r: _ratio(v["first_contact"], v["agent_resolved"]),
    ),
    "csat_mean": (
        "score",
        "mean survey score (1-5)",
        lambda v, r: _ratio(v["csat_score"], v["csat_received"]),
    ),
    "csat_satisfied_rate": (
        "ratio",
        "answers scoring 4 or 5 / answers",
        lambda v, r: _ratio(v["csat_satisfied"], v["csat_received"]),
    ),
    "csat_response_rate": (
        "ratio",
        "surveys answered / surveys sent",
        lambda v, r: _ratio(v["csat_received"], v["csat_sent"]),
    ),
    "csat_sent": ("count", "surveys sent", lambda v, r: v["csat_sent"]),
    "csat_received": ("count", "surveys answered", lambda v, r: v["csat_received"]),
    "reopen_rate": (
        "ratio",
        "tickets reopened at least once / tickets resolved at least once",
        lambda v, r: _ratio(v["reopened"], v["ever_resolved"]),
    ),
    "repeat_rate": (
        "ratio",
        "tickets whose customer had one of the same module within repeat_days / tickets",
        lambda v, r: _ratio(v[f"repeat_{r}d"], v["tickets"]),
    ),
    "sla_first_response_attainment": (
        "ratio",
        "first-response targets met / met + breached",
        lambda v, r: _ratio(v["fr_met"], v["fr_met"] + v["fr_breached"]),
    ),
    "sla_next_response_attainment": (
        "ratio",
        "next-response waits met / met + breached",
        lambda v, r: _ratio(v["nr_met"], v["nr_met"] + v["nr_breached"]),
    ),
    "sla_resolution_attainment": (
        "ratio",
        "resolution targets met / met + breached",
        lambda v, r: _ratio(v["res_met"], v["res_met"] + v["res_breached"]),
    ),
    "sla_periodic_update_attainment": (
        "ratio",
        "periodic-update targets met / met + breached",
        lambda v, r: _ratio(v["pu_met"], v["pu_met"] + v["pu_breached"]),
    ),
    "sla_breaches": (
        "count",
        "targets breached (tickets; next response: waits)",
        lambda v, r: v["fr_breached"] + v["res_breached"] + v["pu_breached"] + v["nr_breached"],
    ),
    "handoffs": ("count", "handoffs", lambda v, r: v["handoffs"]),
    "handoffs_per_ticket": ("ratio", "handoffs / tickets", lambda v, r: _ratio(v["handoffs"], v["tickets"])),
    "escalations": ("count", "escalation chains started", lambda v, r: v["escalations"]),
    "escalation_rate": (
        "ratio",
        "tickets escalated / tickets",
        lambda v, r: _ratio(v["escalated"], v["tickets"]),
    ),
    "kb_deflection_rate": (
        "ratio",
        "tickets resolved by a suggested article (self-service) / tickets",
        lambda v, r: _ratio(v["self_service"], v["tickets"]),
    ),
    "region_legs": ("count", "region legs", lambda v, r: v["legs"]),
    "region_legs_unanswered": (
        "count",
        "legs in which the customer waited and the region never answered",
        lambda v, r: v["legs_owed"] - v["legs_answered"],
    ),
    "region_hold_mean": (
        "seconds",
        "mean time a region held the ticket open in a finished leg",
        lambda v, r: _ratio(v["leg_hold_s"], v["legs_ended"]),
    ),
    "backlog": ("count", "tickets open at the end of the bucket (or at `to`)", None),
    "backlog_age_mean": ("seconds", "mean age of those tickets at that instant", None),
}


def _catalogue() -> dict[str, Metric]:
    metrics = {}
    for name, (unit, description, _) in _SIMPLE.items():
        metrics[name] = Metric(name=name, unit=unit, description=description)
    for hist, (_, _, description) in _DISTRIBUTIONS.items():
        for suffix in ("p50", "p90", "mean"):
            metrics[f"{hist}_{suffix}"] = Metric(
                name=f"{hist}_{suffix}", unit="seconds", description=f"{description} ({suffix})"
            )
    return metrics


METRICS = _catalogue()


def _fields_read(how: Any) -> frozenset[str]:
    """The accumulator fields a metric's formula reads, found by running it once on a probe."""
    seen: set[str] = set()

    class Probe(dict):
        def __missing__(self, key: str) -> float:
            seen.add(key)
            return 1.0

    for days in REPEAT_DAYS:
        how(Probe(), days)
    return frozenset(seen)


_NEEDS = {name: _fields_read(how) for name, (_, _, how) in _SIMPLE.items() if how is not None}
_NEEDS |= {
    "backlog": frozenset({"backlog"}),
    "backlog_age_mean": frozenset({"backlog", "backlog_created_epoch"}),
}
for _hist, (_count, _sum, _) in _DISTRIBUTIONS.items():
    _NEEDS |= {
        f"{_hist}_p50": frozenset(),
        f"{_hist}_p90": frozenset(),
        f"{_hist}_mean": frozenset({_count, _sum}),
    }


LEG_METRICS = frozenset(m for m in METRICS if m.startswith("region_"))


def fields_for(metrics: Iterable[str]) -> set[str]:
    """The accumulator fields these metrics need, plus what tells a group is there at all:
    tickets, and legs when region metrics are asked for."""
    metrics = set(metrics)
    presence = {"tickets", "legs"} if metrics & LEG_METRICS else {"tickets"}
    return presence.union(*(_NEEDS[m] for m in metrics))


DEFAULT_METRICS = (
    "tickets",
    "first_response_p50",
    "first_response_p90",
    "resolution_p50",
    "resolution_p90",
    "csat_mean",
    "reopen_rate",
    "sla_first_response_attainment",
    "backlog",
)


def histograms_for(metrics: Iterable[str]) -> set[str]:
    """The histograms these metrics read."""
    return {m.rsplit("_", 1)[0] for m in metrics if m.rsplit("_", 1)[-1] in ("p50", "p90")}


def _formula(name: str, repeat_days: int) -> Any:
    """How one metric is read off an accumulator (and the instant the backlog was counted)."""
    if name == "backlog":
        return lambda acc, at: acc.fields["backlog"]
    if name == "backlog_age_mean":

        def age(acc: Accumulator, at: datetime | None) -> float | None:
            mean_created = _ratio(acc.fields["backlog_created_epoch"], acc.fields["backlog"])
            return None if mean_created is None or at is None else at.timestamp() - mean_created

        return age
    if name in _SIMPLE:
        how = _SIMPLE[name][2]
        return lambda acc, at: how(acc.fields, repeat_days)
    hist, suffix = name.rsplit("_", 1)
    count_field, sum_field, _ = _DISTRIBUTIONS[hist]
    if suffix == "mean":
        return lambda acc, at: _ratio(acc.fields[sum_field], acc.fields[count_field])
    fraction = 0.5 if suffix == "p50" else 0.9

    def cut(acc: Accumulator, at: datetime | None) -> float | None:
        counts = acc.histograms.get(hist)
        if counts is None:
            return None
        cumulative = acc.cumulative.get(hist)
        if cumulative is None:  # sorted once for p50 and p90 alike
            cumulative = acc.cumulative[hist] = Cumulative(counts)
        return cumulative.percentile(fraction)

    return cut


@functools.lru_cache(maxsize=256)
def _formulas(names: tuple[str, ...], repeat_days: int) -> list[tuple[str, Any]]:
    return [(name, _formula(name, repeat_days)) for name in names]


def metric_values(
    acc: Accumulator, names: Sequence[str], *, at: datetime | None = None, repeat_days: int = 7
) -> dict[str, float | None]:
    """The requested metrics of one accumulator; `at` is when the backlog was counted."""
    out: dict[str, float | None] = {}
    for name, formula in _formulas(tuple(names), repeat_days):
        value = formula(acc, at)
        out[name] = None if value is None else float(value)
    return out


# --- buckets in the viewer's time zone -------------------------------------------------------


def bucket_key(at: datetime, bucket: Bucket, tz: ZoneInfo) -> str | None:
    """The bucket an instant falls in, as the API names it: a local date for days and weeks
    (weeks start on Monday), a local hour with its UTC offset for hours (so the hour that
    repeats when clocks go back is two buckets)."""
    if bucket is Bucket.NONE:
        return None
    local = at.astimezone(tz)
    if bucket is Bucket.HOUR:
        return local.replace(minute=0, second=0, microsecond=0).isoformat()
    day = local.date()
    if bucket is Bucket.WEEK:
        day -= timedelta(days=day.weekday())
    return day.isoformat()


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local date. Where clocks skip midnight, zoneinfo reads the missing
    00:00 with the offset before the jump, which is exactly the instant the day begins."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def bucket_end(key: str | None, bucket: Bucket, tz: ZoneInfo, end: datetime) -> datetime:
    """The instant a bucket ends, or the window's end if that comes first (backlog is counted there)."""
    if bucket is Bucket.NONE or key is None:
        return end
    if bucket is Bucket.HOUR:
        stop = datetime.fromisoformat(key) + timedelta(hours=1)
    else:
        days = 7 if bucket is Bucket.WEEK else 1
        stop = local_midnight(date.fromisoformat(key) + timedelta(days=days), tz)
    return min(stop, end)


def bucket_keys(start: datetime, end: datetime, bucket: Bucket, tz: ZoneInfo) -> list[str | None]:
    """Every bucket the window touches, in order."""
    if bucket is Bucket.NONE:
        return [None]
    keys: list[str | None] = []
    if bucket is Bucket.HOUR:
        # Hours are whole UTC hours shifted by the zone's offset, which may be a quarter hour.
        cursor = start
        while cursor < end:
            key = bucket_key(cursor, bucket, tz)
            if not keys or keys[-1] != key:
                keys.append(key)
            cursor = datetime.fromisoformat(key) + timedelta(hours=1)
        return keys
    day = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    while day <= last:
        key = bucket_key(local_midnight(day, tz), bucket, tz)
        if not keys or keys[-1] != key:
            keys.append(key)
        day += timedelta(days=1)
    return keys


# --- a query and its answer ------------------------------------------------------------------


class KpiQuery(BaseModel):
    start: AwareDatetime
    end: AwareDatetime
    group_by: tuple[str, ...] = ()
    bucket: Bucket = Bucket.NONE
    timezone: str = "UTC"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    repeat_days: int = 7

    @model_validator(mode="after")
    def _consistent(self) -> KpiQuery:
        if self.end <= self.start:
            raise ValueError("`from` must be before `to`")
        unknown = [d for d in self.group_by if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown group_by {', '.join(unknown)}; known: {', '.join(DIMENSIONS)}")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by names a dimension twice")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {', '.join(unknown)}")
        if self.repeat_days not in REPEAT_DAYS:
            raise ValueError(f"repeat_days must be one of {', '.join(map(str, REPEAT_DAYS))}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown IANA time zone {self.timezone!r}") from exc
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class KpiRow(BaseModel):
    bucket: str | None = Field(
        description="local date (day, week) or local hour with offset; None without buckets"
    )
    group: dict[str, str | None]
    values: dict[str, float | None]


def finish(
    query: KpiQuery, cells: dict[tuple[str | None, tuple[str | None, ...]], Accumulator]
) -> list[KpiRow]:
    """Rows in bucket then group order, each accumulator turned into the requested metrics."""
    rows, ends = [], {}
    for (key, group), acc in sorted(cells.items(), key=lambda item: _order(item[0])):
        if acc.is_empty():
            continue
        if key not in ends:
            ends[key] = bucket_end(key, query.bucket, query.zone, query.end)
        values = metric_values(acc, query.metrics, at=ends[key], repeat_days=query.repeat_days)
        # Built from checked parts: validating thousands of rows again would cost more than the query.
        group_values = dict(zip(query.group_by, group, strict=True))
        rows.append(KpiRow.model_construct(bucket=key, group=group_values, values=values))
    return rows


def _order(key: tuple[str | None, tuple[str | None, ...]]) -> tuple:
    bucket, group = key
    return (
        datetime.fromisoformat(bucket).timestamp() if bucket and "T" in bucket else (bucket or ""),
        tuple((v is None, v or "") for v in group),
    )


def aggregate(facts: Iterable[TicketFacts], query: KpiQuery) -> list[KpiRow]:
    """The KPIs of these tickets, straight from their facts (what db/kpis.py computes in SQL)."""
    facts = list(facts)
    zone = query.zone
    cells: dict[tuple[str | None, tuple[str | None, ...]], Accumulator] = defaultdict(Accumulator)
    for f in facts:
        if not query.start <= f.created_at < query.end:
            continue
        key = bucket_key(f.created_at, query.bucket, zone)
        cells[(key, tuple(f.dimension(d) for d in query.group_by))].add_ticket(f)
        for leg in f.legs if LEG_METRICS & set(query.metrics) else ():
            group = tuple(
                leg.region if d == "region" else leg.agent_id if d == "agent" else f.dimension(d)
                for d in query.group_by
            )
            cells[(key, group)].add_leg(leg)
    if {"backlog", "backlog_age_mean"} & set(query.metrics):
        for key in bucket_keys(query.start, query.end, query.bucket, zone):
            at = bucket_end(key, query.bucket, zone, query.end)
            for f in facts:
                if is_open_at(f, at):
                    group = tuple(f.dimension(d) for d in query.group_by)
                    cells[(key, group)].add_backlog(1, f.created_at.timestamp())
    return finish(query, cells)
