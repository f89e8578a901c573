"""SQL for KPIs (definitions: docs/kpis.md).

- `refresh_ticket_facts`: a ticket's facts, recomputed from its whole timeline after each
  projection. A ticket whose facts change becomes pending (`kpi_pending`), and the first time
  since the last refresh the facts the rollups hold of it are kept (`kpi_held_*`).
- `refresh_rollups`: rebuilds the days of `kpi_daily` pending tickets touch, in every time zone,
  and days never built; then forgets the pending tickets that did not change meanwhile.
- `query`: a KPI request. Whole local days that are built come from `kpi_daily`, corrected by
  each pending ticket's facts now less its held facts; everything else (partial days at the
  window's edges, days not built, hour buckets, groupings or time zones without rollups) from
  `ticket_facts`. All of it ends in the same accumulators and `domain.kpis.metric_values`, so an
  answer never depends on which path a day took, or on when the rollups were last refreshed.
"""

from __future__ import annotations

import array
import bisect
import itertools
import re
import sys
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from db import calendars
from domain.kpis import (
    DIMENSIONS,
    FIELDS,
    HISTOGRAM_BINS,
    HISTOGRAMS,
    LEG_HISTOGRAMS,
    REPEAT_DAYS,
    SATISFIED_SCORE,
    SLA_TARGETS,
    Accumulator,
    Bucket,
    KpiQuery,
    KpiRow,
    OpenWindows,
    TicketFacts,
    bin_of,
    bucket_end,
    bucket_key,
    bucket_keys,
    facts_from_timeline,
    fields_for,
    finish,
    histograms_for,
    local_midnight,
)
from domain.tickets import Actor, TimelineEvent

log = structlog.get_logger(__name__)

# Groupings kept in kpi_daily: none, each dimension, and each pair of region, module, language
# and priority (the pairs managers compare; a pair with agent or channel multiplies the rows for
# questions rarely asked). Any other grouping is computed from ticket_facts. A change here needs a
# migration that empties the rollups (see 0015).
PAIRED_DIMENSIONS = ("region", "module", "language", "priority")
ROLLUP_GROUPINGS: tuple[tuple[str, ...], ...] = (
    (),
    *((d,) for d in DIMENSIONS),
    *itertools.combinations(PAIRED_DIMENSIONS, 2),
)
COLUMN = {d: "agent_id" if d == "agent" else d for d in DIMENSIONS}
BACKLOG_METRICS = frozenset({"backlog", "backlog_age_mean"})
# In kpi_daily the backlog fields are that day's moves, not the cohort's: read apart.
COHORT_FIELDS = tuple(name for name in FIELDS if name not in ("backlog", "backlog_created_epoch"))
_FACTS_LOCK = 7_262_042  # advisory lock class: one facts refresh per ticket at a time
_REFRESH_LOCK = 7_262_043  # one rollup refresh at a time
REFRESH_CHUNK_DAYS = 31  # days never built are built this many (zone-days) per snapshot

Key = tuple[Any, int, tuple[str | None, ...]]  # (bucket, grouping mask, six dimension values)


def mask_of(dims: Iterable[str]) -> int:
    return sum(1 << DIMENSIONS.index(d) for d in dims)


ROLLUP_MASKS = frozenset(mask_of(g) for g in ROLLUP_GROUPINGS)


# --- facts -------------------------------------------------------------------------------------


def _event(row: asyncpg.Record) -> TimelineEvent:
    return TimelineEvent(
        seq=row["seq"],
        at=row["at"],
        kind=row["kind"],
        actor=Actor(**row["actor"]),
        region=row["region"],
        internal=row["internal"],
        data=row["data"],
    )


def final_priority(events: Sequence[TimelineEvent]) -> str | None:
    priority = None
    for e in events:
        if e.kind == "triaged":
            priority = e.data.get("priority")
        elif e.kind == "priority_changed":
            priority = e.data.get("to")
    return priority


class SlaContext:
    """What business time and SLA verdicts need beyond the timeline: the calendar of the policy
    of the customer's tier and the ticket's priority, and which targets that policy sets.
    Read once per batch, for tickets of many customers."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn
        self.customers: dict[str, asyncpg.Record | None] = {}
        self.policies: dict[tuple[str, str], asyncpg.Record] | None = None
        self.windows: dict[str, tuple[datetime, datetime, OpenWindows | None]] = {}

    async def for_ticket(
        self, customer_id: str, priority: str | None, start: datetime, end: datetime
    ) -> tuple[str | None, OpenWindows | None, frozenset[str]]:
        if customer_id not in self.customers:
            self.customers[customer_id] = await self.conn.fetchrow(
                "SELECT tier, calendar_id FROM customers WHERE id = $1", customer_id
            )
        if self.policies is None:
            rows = await self.conn.fetch("SELECT * FROM sla_policies")
            self.policies = {(r["tier"], r["priority"]): r for r in rows}
        customer = self.customers[customer_id]
        policy = self.policies.get((customer["tier"], priority)) if customer and priority else None
        if policy is None:
            return None, None, SLA_TARGETS
        targets = {"first_response", "resolution"}
        targets |= {"next_response"} if policy["next_response_minutes"] else set()
        targets |= {"periodic_update"} if policy["periodic_update_minutes"] else set()
        calendar_id = customer["calendar_id"] if policy["calendar"] == "customer" else policy["calendar"]
        return calendar_id, await self._clock(calendar_id, start, end), frozenset(targets)

    async def _clock(self, calendar_id: str | None, start: datetime, end: datetime) -> OpenWindows | None:
        if calendar_id is None:
            return None
        known = self.windows.get(calendar_id)
        if known is not None and known[0] <= start and end <= known[1]:
            return known[2]
        calendar = await calendars.get_calendar(self.conn, calendar_id)
        if calendar is None or calendar.always_open:
            clock = None
        else:
            if known is not None:
                start, end = min(start, known[0]), max(end, known[1])
            clock = OpenWindows(calendar.windows(start, end))
        self.windows[calendar_id] = (start, end, clock)
        return clock


async def compute_facts(
    conn: asyncpg.Connection, ticket_ids: Sequence[int], context: SlaContext | None = None
) -> list[TicketFacts]:
    """Facts of these tickets from their timelines (tickets without events are skipped)."""
    context = context or SlaContext(conn)
    rows = await conn.fetch(
        """SELECT e.*, t.customer_id FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id
           WHERE e.ticket_id = ANY($1::bigint[]) ORDER BY e.ticket_id, e.seq""",
        list(ticket_ids),
    )
    timelines: dict[int, list[asyncpg.Record]] = defaultdict(list)
    for r in rows:
        timelines[r["ticket_id"]].append(r)
    result = []
    for ticket_id, ticket_rows in timelines.items():
        events = [_event(r) for r in ticket_rows]
        customer_id = ticket_rows[0]["customer_id"]
        calendar_id, clock, targets = await context.for_ticket(
            customer_id, final_priority(events), events[0].at, events[-1].at
        )
        result.append(
            facts_from_timeline(
                events,
                ticket_id=ticket_id,
                customer_id=customer_id,
                clock=clock,
                calendar_id=calendar_id,
                sla_targets=targets,
            )
        )
    return result


def _bin(seconds: float | None) -> int | None:
    return None if seconds is None else bin_of(seconds)


def fact_row(f: TicketFacts) -> dict[str, Any]:
    answered = [w for w in f.waits if w.answered]
    return {
        "ticket_id": f.ticket_id,
        "last_seq": f.last_seq,
        "customer_id": f.customer_id,
        "created_at": f.created_at,
        "region": f.region,
        "agent_id": f.agent_id,
        "module": f.module,
        "language": f.language,
        "priority": f.priority,
        "channel": f.channel,
        "calendar_id": f.calendar_id,
        "first_response_at": f.first_response_at,
        "first_response_s": f.first_response_seconds,
        "first_response_bs": f.first_response_business_seconds,
        "first_response_bin": _bin(f.first_response_seconds),
        "first_response_bbin": _bin(f.first_response_business_seconds),
        "resolved_at": f.resolved_at,
        "resolution_s": f.resolution_seconds,
        "resolution_bs": f.resolution_business_seconds,
        "resolution_bin": _bin(f.resolution_seconds),
        "resolution_bbin": _bin(f.resolution_business_seconds),
        "pending_s": f.pending_seconds,
        "resolutions": f.resolutions,
        "reopens": f.reopens,
        "public_replies": f.public_replies,
        "agent_resolved": f.agent_resolved,
        "self_service": f.self_service,
        "first_contact": f.first_contact,
        "csat_sent": f.csat_sent,
        "csat_received": len(f.csat_scores),
        "csat_score_sum": sum(f.csat_scores),
        "csat_satisfied": sum(1 for s in f.csat_scores if s >= SATISFIED_SCORE),
        "handoffs": f.handoffs,
        "escalations": f.escalations,
        "sla_first_response": f.sla.get("first_response"),
        "sla_resolution": f.sla.get("resolution"),
        "sla_periodic_update": f.sla.get("periodic_update"),
        "nr_bins": [bin_of(w.seconds) for w in answered],
        "nr_bbins": [bin_of(w.business_seconds) for w in answered],
        "nr_sum_s": sum(w.seconds for w in answered),
        "nr_sum_bs": sum(w.business_seconds for w in answered),
        "nr_met": sum(1 for w in answered if not w.breached),
        "nr_breached": sum(1 for w in f.waits if w.breached),
        "previous_same_issue_at": f.previous_same_issue_at,
    }


def leg_rows(f: TicketFacts) -> list[dict[str, Any]]:
    return [
        {
            "ticket_id": f.ticket_id,
            "leg": n,
            "region": leg.region,
            "agent_id": leg.agent_id,
            "started_at": leg.started_at,
            "ended_at": leg.ended_at,
            "held_s": leg.held_seconds,
            "owed": leg.owed_from is not None,
            "response_s": leg.response_seconds,
            "response_bs": leg.response_business_seconds,
            "response_bin": _bin(leg.response_seconds),
            "response_bbin": _bin(leg.response_business_seconds),
            "created_at": f.created_at,
            "module": f.module,
            "language": f.language,
            "priority": f.priority,
            "channel": f.channel,
        }
        for n, leg in enumerate(f.legs, 1)
    ]


def period_rows(f: TicketFacts) -> list[dict[str, Any]]:
    dimensions = {"created_at": f.created_at, "region": f.region, "agent_id": f.agent_id, "module": f.module}
    dimensions |= {"language": f.language, "priority": f.priority, "channel": f.channel}
    return [
        {"ticket_id": f.ticket_id, "opened_at": p.opened_at, "closed_at": p.closed_at, **dimensions}
        for p in f.open_periods
    ]


async def _copy(conn: asyncpg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        columns = list(rows[0])
        await conn.copy_records_to_table(table, records=[tuple(r.values()) for r in rows], columns=columns)


async def write_facts(conn: asyncpg.Connection, facts: Sequence[TicketFacts]) -> None:
    """Replace these tickets' facts, legs and open periods (one transaction, bulk COPY)."""
    ids = [f.ticket_id for f in facts]
    async with conn.transaction():
        await conn.execute("DELETE FROM ticket_legs WHERE ticket_id = ANY($1::bigint[])", ids)
        await conn.execute("DELETE FROM ticket_open_periods WHERE ticket_id = ANY($1::bigint[])", ids)
        await conn.execute("DELETE FROM ticket_facts WHERE ticket_id = ANY($1::bigint[])", ids)
        await _copy(conn, "ticket_facts", [fact_row(f) for f in facts])
        await _copy(conn, "ticket_legs", [r for f in facts for r in leg_rows(f)])
        await _copy(conn, "ticket_open_periods", [r for f in facts for r in period_rows(f)])


HELD = {
    "ticket_facts": "kpi_held_facts",
    "ticket_legs": "kpi_held_legs",
    "ticket_open_periods": "kpi_held_periods",
}


async def hold(conn: asyncpg.Connection, ticket_ids: Sequence[int]) -> None:
    """Before these tickets' facts change: mark them pending and, the first time since the last
    refresh, keep the facts the rollups hold of them."""
    rows = await conn.fetch(
        """INSERT INTO kpi_pending (ticket_id, version)
           SELECT t, nextval('kpi_pending_version') FROM unnest($1::bigint[]) AS t
           ON CONFLICT (ticket_id) DO UPDATE SET version = EXCLUDED.version
           RETURNING ticket_id, xmax = 0 AS first""",
        list(ticket_ids),
    )
    first = [r["ticket_id"] for r in rows if r["first"]]
    if first:
        for table, held in HELD.items():
            await conn.execute(
                f"INSERT INTO {held} SELECT * FROM {table} WHERE ticket_id = ANY($1::bigint[])", first
            )


async def refresh_ticket_facts(conn: asyncpg.Connection, ticket_id: int) -> TicketFacts | None:
    """Recompute one ticket's facts if its timeline grew; idempotent. Returns the new facts."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _FACTS_LOCK, ticket_id % 2**31)
        last_seq = await conn.fetchval("SELECT max(seq) FROM ticket_events WHERE ticket_id = $1", ticket_id)
        known = await conn.fetchval("SELECT last_seq FROM ticket_facts WHERE ticket_id = $1", ticket_id)
        if last_seq is None or known == last_seq:
            return None
        computed = await compute_facts(conn, [ticket_id])
        if not computed:
            return None
        facts = computed[0]
        if facts.module is not None:
            facts.previous_same_issue_at = await conn.fetchval(
                """SELECT max(created_at) FROM ticket_facts
                   WHERE customer_id = $1 AND module = $2 AND created_at < $3 AND ticket_id <> $4""",
                facts.customer_id,
                facts.module,
                facts.created_at,
                ticket_id,
            )
        await hold(conn, [ticket_id])
        await write_facts(conn, [facts])
        if facts.module is not None:
            # A ticket whose facts arrive late is the nearer "previous" of its customer's later ones.
            later = [
                r["ticket_id"]
                for r in await conn.fetch(
                    """SELECT ticket_id FROM ticket_facts
                       WHERE customer_id = $1 AND module = $2 AND created_at > $3
                         AND (previous_same_issue_at IS NULL OR previous_same_issue_at < $3)""",
                    facts.customer_id,
                    facts.module,
                    facts.created_at,
                )
            ]
            if later:
                await hold(conn, later)
                await conn.execute(
                    "UPDATE ticket_facts SET previous_same_issue_at = $2 WHERE ticket_id = ANY($1::bigint[])",
                    later,
                    facts.created_at,
                )
        return facts


async def refresh_ticket_facts_quietly(conn: asyncpg.Connection, ticket_id: int) -> None:
    """For the projection: KPIs are derived data and must never hold a ticket up. A failure is
    logged; `backfill` (or the ticket's next projection) catches up."""
    try:
        await refresh_ticket_facts(conn, ticket_id)
    except Exception:  # whatever went wrong, the ticket's own projection already succeeded
        log.exception("ticket facts not refreshed", ticket_id=ticket_id)


async def link_same_issues(conn: asyncpg.Connection) -> None:
    """Every ticket's previous ticket of the same customer and module, in one pass."""
    await conn.execute(
        """UPDATE ticket_facts f SET previous_same_issue_at = p.previous
           FROM (SELECT ticket_id, (SELECT max(o.created_at) FROM ticket_facts o
                                    WHERE o.customer_id = t.customer_id AND o.module = t.module
                                      AND o.created_at < t.created_at) AS previous
                 FROM ticket_facts t WHERE t.module IS NOT NULL) p
           WHERE f.ticket_id = p.ticket_id AND f.previous_same_issue_at IS DISTINCT FROM p.previous"""
    )


async def backfill(pool: asyncpg.Pool, *, only_stale: bool = True, batch: int = 500) -> int:
    """Facts for tickets whose timeline is ahead of them (a projection failed to refresh them),
    one by one, and the rollups brought up to date. With only_stale=False, every ticket's facts
    recomputed in bulk and the rollups rebuilt: for an installation that has tickets but no facts
    yet, or after editing calendars or SLA policies. Returns how many tickets were recomputed."""
    done, after = 0, 0
    async with pool.acquire() as conn:
        context = SlaContext(conn)
        while True:
            ids = [
                r["id"]
                for r in await conn.fetch(
                    """SELECT t.id FROM tickets t LEFT JOIN ticket_facts f ON f.ticket_id = t.id
                       WHERE t.id > $1 AND (NOT $2 OR f.ticket_id IS NULL
                             OR f.last_seq < (SELECT max(seq) FROM ticket_events e WHERE e.ticket_id = t.id))
                       ORDER BY t.id LIMIT $3""",
                    after,
                    only_stale,
                    batch,
                )
            ]
            if not ids:
                break
            after = ids[-1]
            if only_stale:
                done += sum([await refresh_ticket_facts(conn, ticket_id) is not None for ticket_id in ids])
                continue
            facts = await compute_facts(conn, ids, context)
            await write_facts(conn, facts)
            done += len(facts)
        if only_stale:
            await refresh_rollups(conn)
        else:
            await link_same_issues(conn)
            await rebuild_rollups(conn)
    return done


# --- accumulating facts in SQL ----------------------------------------------------------------


def _hour_origin(timezone: str, ranges: Sequence[tuple[datetime, datetime]]) -> datetime | None:
    """The first instant of a local hour, when every local hour over `ranges` starts a whole number
    of hours after it: the zone's offset stays put there, or moves by whole hours, as almost every
    zone's does. Hour buckets are then plain arithmetic instead of two time-zone conversions a row."""
    zone = ZoneInfo(timezone)
    start, end = min(r[0] for r in ranges), max(r[1] for r in ranges)
    offset = start.astimezone(zone).utcoffset()
    at = start
    while at <= end + timedelta(hours=1):
        if (at.astimezone(zone).utcoffset() - offset) % timedelta(hours=1):
            return None  # e.g. Lord Howe Island's half-hour summer time
        at += timedelta(hours=1)
    return start.astimezone(zone).replace(minute=0, second=0, microsecond=0).astimezone(UTC)


def _bucket_sql(ts: str, bucket: Bucket, hour_origin: bool = False) -> str:
    """The bucket of `ts` in time zone $1 (the only parameter it uses; with `hour_origin`, $1 is
    the first instant of a local hour instead), in the types `_bucket_value` turns into keys."""
    if bucket is Bucket.NONE:
        return "NULL::date"
    if bucket is Bucket.HOUR and hour_origin:
        return f"date_bin('1 hour', {ts}, $1::timestamptz)"
    if bucket is Bucket.DAY:
        return f"({ts} AT TIME ZONE $1)::date"
    if bucket is Bucket.WEEK:
        return f"date_trunc('week', {ts} AT TIME ZONE $1)::date"
    # The start of the local hour, taken with the instant's own offset: never ambiguous.
    return f"{ts} - (({ts} AT TIME ZONE $1) - date_trunc('hour', {ts} AT TIME ZONE $1))"


class _Groups:
    """Select list and GROUPING SETS over rows whose columns are named after the dimensions
    (plus `bucket` when there are buckets); `absent` tells the grouping set of each result row."""

    def __init__(self, sets: Sequence[tuple[str, ...]], *, bucket: bool):
        self.sets = [tuple(d for d in DIMENSIONS if d in s) for s in sets]
        self.bucket = bucket
        self.used = [d for d in DIMENSIONS if any(d in s for s in self.sets)]

    def select(self) -> str:
        columns = ["bucket" if self.bucket else "NULL::date AS bucket"]
        columns += [d if d in self.used else f"NULL::text AS {d}" for d in DIMENSIONS]
        if len(self.sets) > 1:
            columns.append(f"GROUPING({', '.join(self.used)}) AS absent")
        else:
            columns.append("0 AS absent")
        return ", ".join(columns)

    def group_by(self, *extra: str) -> str:
        sets = [
            f"({', '.join((['bucket'] if self.bucket else []) + list(s) + list(extra))})" for s in self.sets
        ]
        return f"GROUP BY GROUPING SETS ({', '.join(sets)})"

    def key(self, row: asyncpg.Record, bucket: Any) -> Key:
        if len(self.sets) > 1:
            absent = row["absent"]
            present = [d for i, d in enumerate(reversed(self.used)) if not absent & (1 << i)]
            mask = mask_of(present)
        else:
            mask = mask_of(self.sets[0])
        values = tuple(row[d] if mask & (1 << i) else None for i, d in enumerate(DIMENSIONS))
        return (bucket, mask, values)


_TICKET_SUMS = {
    "tickets": "count(*)",
    "first_responses": "count(w.first_response_s)",
    "first_response_s": "sum(w.first_response_s)",
    "first_response_bs": "sum(w.first_response_bs)",
    "resolved": "count(w.resolution_s)",
    "resolution_s": "sum(w.resolution_s)",
    "resolution_bs": "sum(w.resolution_bs)",
    "ever_resolved": "count(*) FILTER (WHERE w.resolutions > 0)",
    "reopened": "count(*) FILTER (WHERE w.reopens > 0)",
    "reopens": "sum(w.reopens)",
    "agent_resolved": "count(*) FILTER (WHERE w.agent_resolved)",
    "first_contact": "count(*) FILTER (WHERE w.first_contact)",
    "self_service": "count(*) FILTER (WHERE w.self_service AND w.resolved_at IS NOT NULL)",
    "csat_sent": "sum(w.csat_sent)",
    "csat_received": "sum(w.csat_received)",
    "csat_score": "sum(w.csat_score_sum)",
    "csat_satisfied": "sum(w.csat_satisfied)",
    **{
        f"repeat_{days}d": (
            f"count(*) FILTER (WHERE w.created_at - w.previous_same_issue_at <= interval '{days} days')"
        )
        for days in REPEAT_DAYS
    },
    "handoffs": "sum(w.handoffs)",
    "handed_off": "count(*) FILTER (WHERE w.handoffs > 0)",
    "escalations": "sum(w.escalations)",
    "escalated": "count(*) FILTER (WHERE w.escalations > 0)",
    "fr_met": "count(*) FILTER (WHERE w.sla_first_response = 'met')",
    "fr_breached": "count(*) FILTER (WHERE w.sla_first_response = 'breached')",
    "res_met": "count(*) FILTER (WHERE w.sla_resolution = 'met')",
    "res_breached": "count(*) FILTER (WHERE w.sla_resolution = 'breached')",
    "pu_met": "count(*) FILTER (WHERE w.sla_periodic_update = 'met')",
    "pu_breached": "count(*) FILTER (WHERE w.sla_periodic_update = 'breached')",
    "nr_met": "sum(w.nr_met)",
    "nr_breached": "sum(w.nr_breached)",
    "waits": "sum(cardinality(w.nr_bins))",
    "next_response_s": "sum(w.nr_sum_s)",
    "next_response_bs": "sum(w.nr_sum_bs)",
}
_LEG_SUMS = {
    "legs": "count(*)",
    "legs_owed": "count(*) FILTER (WHERE w.owed)",
    "legs_answered": "count(w.response_s)",
    "leg_response_s": "sum(w.response_s)",
    "leg_response_bs": "sum(w.response_bs)",
    "legs_ended": "count(w.ended_at)",
    "leg_hold_s": "sum(w.held_s) FILTER (WHERE w.ended_at IS NOT NULL)",
}
_MOVE_SUMS = {"backlog": "sum(w.delta)", "backlog_created_epoch": "sum(w.delta * w.created_epoch)"}
# histogram -> (what to join to the window's rows, the bin)
_HISTOGRAM_BINS = {
    "first_response": ("", "w.first_response_bin"),
    "first_response_business": ("", "w.first_response_bbin"),
    "resolution": ("", "w.resolution_bin"),
    "resolution_business": ("", "w.resolution_bbin"),
    "next_response": (" CROSS JOIN LATERAL unnest(w.nr_bins) AS x(bin)", "x.bin"),
    "next_response_business": (" CROSS JOIN LATERAL unnest(w.nr_bbins) AS x(bin)", "x.bin"),
    "region_response": ("", "w.response_bin"),
    "region_response_business": ("", "w.response_bbin"),
}
assert set(_TICKET_SUMS) | set(_LEG_SUMS) | set(_MOVE_SUMS) == set(FIELDS)
_DIMENSIONS_OF_F = "f.region, f.module, f.language, f.agent_id AS agent, f.priority, f.channel"
_DIMENSIONS_OF_M = _DIMENSIONS_OF_F.replace("f.", "m.")
_LEG_COLUMNS = """l.region, l.module, l.language, l.agent_id AS agent, l.priority, l.channel, l.owed,
    l.response_s, l.response_bs, l.response_bin, l.response_bbin, l.ended_at, l.held_s"""


def _columns_read(sums: dict[str, str], histograms: Iterable[str]) -> str:
    """The facts columns some sums and histograms read (the window's rows carry only those)."""
    sql = " ".join([*sums.values(), *(" ".join(_HISTOGRAM_BINS[h]) for h in histograms)])
    return "".join(f", f.{column}" for column in sorted(set(re.findall(r"\bw\.(\w+)", sql))))


def _sparse_text(histogram: dict[int, float] | None) -> str | None:
    """pgvector's sparsevec text (1-based): a few bytes per non-empty bin instead of 386 floats."""
    if not histogram:
        return None
    return (
        "{" + ",".join(f"{b + 1}:{n:g}" for b, n in sorted(histogram.items()) if n) + f"}}/{HISTOGRAM_BINS}"
    )


def _sparse(sent: bytes) -> dict[int, float]:
    """pgvector's binary sparsevec: dim, nnz and a spare int32, nnz indices, nnz float4 values."""
    nnz = int.from_bytes(sent[4:8], "big")
    bins, counts = array.array("i", sent[12 : 12 + 4 * nnz]), array.array("f", sent[12 + 4 * nnz :])
    if sys.byteorder == "little":
        bins.byteswap()
        counts.byteswap()
    return dict(zip(bins, counts, strict=True))


def _acc(accs: dict[Key, Accumulator], key: Key) -> Accumulator:
    acc = accs.get(key)
    if acc is None:
        acc = accs[key] = Accumulator()
    return acc


def _within(ts: str, ranges: int, first: int) -> str:
    """`ts` in any of the ranges given as parameters $first, $first+1, ...: plain bounds, so the
    planner sees real timestamps and picks index scans for small windows."""
    bounds = (f"({ts} >= ${first + 2 * n} AND {ts} < ${first + 2 * n + 1})" for n in range(ranges))
    return f"({' OR '.join(bounds)})"


def _statement(rows: str, groups: _Groups, sums: dict[str, str], histograms: Iterable[str]) -> str:
    """One pass over `rows` (a query naming its columns as the dimensions, `bucket` and the
    figures): the sums per group, then each histogram per group as its non-empty bins."""
    parts = [
        f"SELECT '' AS part, {groups.select()}, ARRAY[{', '.join(sums.values())}]::float8[] AS sums, "
        f"NULL::smallint[] AS bins, NULL::bigint[] AS counts FROM w {groups.group_by()}"
    ]
    columns = f"bucket, {', '.join(DIMENSIONS)}, absent"
    for name in histograms:
        join, value = _HISTOGRAM_BINS[name]
        parts.append(
            f"SELECT '{name}', {columns}, NULL, array_agg(bin), array_agg(n) FROM "
            f"(SELECT {groups.select()}, {value} AS bin, count(*) AS n FROM w{join} "
            f"WHERE {value} IS NOT NULL {groups.group_by(value)}) h GROUP BY {columns}"
        )
    return f"WITH w AS MATERIALIZED ({rows}) " + " UNION ALL ".join(parts)


async def _gather(
    conn: asyncpg.Connection,
    accs: dict[Key, Accumulator],
    *,
    ranges: Sequence[tuple[datetime, datetime]],
    timezone: str,
    bucket: Bucket,
    sets: Sequence[tuple[str, ...]],
    histograms: Iterable[str],
    fields: Collection[str] = FIELDS,
    cohort: bool = True,
    moves: bool = False,
    convert: Any,
    tickets: Sequence[int] | None = None,
    held: bool = False,
) -> None:
    """Add up the facts of tickets created in `ranges` (cohort figures, legs, histograms) and/or
    the backlog's moves in `ranges`, per bucket and grouping set, into `accs`. Each table is read
    once, however many figures come out of it. With `tickets`, only those; with `held`, their
    held facts, taken away instead of added."""
    if not ranges or tickets == []:
        return
    # $1 is the time zone when buckets need it; PostgreSQL refuses a parameter no clause uses.
    args: list = [at for pair in ranges for at in pair]
    first = 1
    origin = _hour_origin(timezone, ranges) if bucket is Bucket.HOUR else None
    if bucket is not Bucket.NONE:
        args, first = [origin or timezone, *args], 2
    only = ""
    if tickets is not None:
        args.append(list(tickets))
        only = f" AND {{t}}.ticket_id = ANY(${len(args)}::bigint[])"
    facts, legs, periods = (
        HELD[t] if held else t for t in ("ticket_facts", "ticket_legs", "ticket_open_periods")
    )
    sign = -1 if held else 1

    def where(ts: str) -> str:
        return f"WHERE {_within(ts, len(ranges), first)}{only.format(t=ts.split('.')[0])}"

    def bucket_of(ts: str) -> str:
        return _bucket_sql(ts, bucket, hour_origin=origin is not None)

    groups = _Groups(sets, bucket=bucket is not Bucket.NONE)
    histograms = list(histograms)
    statements: list[tuple[str, list[str]]] = []
    if cohort:
        ticket_histograms = [h for h in histograms if h not in LEG_HISTOGRAMS]
        sums = {name: sql for name, sql in _TICKET_SUMS.items() if name in fields}
        rows = f"""SELECT {bucket_of("f.created_at")} AS bucket, {_DIMENSIONS_OF_F}
                       {_columns_read(sums, ticket_histograms)}
                   FROM {facts} f {where("f.created_at")}"""
        statements.append((_statement(rows, groups, sums, ticket_histograms), list(sums)))
        leg_histograms = [h for h in histograms if h in LEG_HISTOGRAMS]
        sums = {name: sql for name, sql in _LEG_SUMS.items() if name in fields}
        if sums or leg_histograms:  # legs outnumber tickets: read them only for region metrics
            rows = f"""SELECT {bucket_of("l.created_at")} AS bucket, {_LEG_COLUMNS}
                       FROM {legs} l {where("l.created_at")}"""
            statements.append((_statement(rows, groups, sums, leg_histograms), list(sums)))
    if moves:
        rows = f"""SELECT {bucket_of("m.at")} AS bucket, {_DIMENSIONS_OF_M}, m.delta,
                       extract(epoch FROM m.created_at)::float8 AS created_epoch
                   FROM (SELECT p.*, p.opened_at AS at, 1 AS delta FROM {periods} p {where("p.opened_at")}
                         UNION ALL
                         SELECT p.*, p.closed_at, -1 FROM {periods} p {where("p.closed_at")}) m"""
        statements.append((_statement(rows, groups, _MOVE_SUMS, ()), list(_MOVE_SUMS)))
    for sql, names in statements:
        for row in await conn.fetch(sql, *args):
            acc = _acc(accs, groups.key(row, convert(row["bucket"])))
            if row["part"]:
                counts = zip(row["bins"], row["counts"], strict=True)
                acc.add_histogram(row["part"], {b: sign * n for b, n in counts})
                continue
            sums_of = acc.fields
            for name, value in zip(names, row["sums"], strict=True):
                if value is not None:
                    sums_of[name] += sign * value


# --- rollups ---------------------------------------------------------------------------------


async def rollup_timezones(conn: asyncpg.Connection) -> list[str]:
    """UTC, every region's time zone (added on first sight), and any other listed."""
    await conn.execute(
        "INSERT INTO kpi_timezones (timezone) SELECT DISTINCT timezone FROM regions ON CONFLICT DO NOTHING"
    )
    return [r["timezone"] for r in await conn.fetch("SELECT timezone FROM kpi_timezones ORDER BY timezone")]


def _day_range(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    return local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)


def _merge_ranges(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


async def _history(conn: asyncpg.Connection) -> tuple[datetime, datetime] | None:
    row = await conn.fetchrow(
        """SELECT (SELECT min(created_at) FROM ticket_facts) AS first,
                  greatest((SELECT max(created_at) FROM ticket_facts),
                           (SELECT max(closed_at) FROM ticket_open_periods),
                           (SELECT max(opened_at) FROM ticket_open_periods)) AS last"""
    )
    return (row["first"], row["last"]) if row["first"] is not None else None


async def _compute_days(conn: asyncpg.Connection, timezone: str, days: Sequence[date]) -> list[tuple]:
    """These local days' kpi_daily rows, from ticket_facts as this transaction sees them."""
    zone = ZoneInfo(timezone)
    accs: dict[Key, Accumulator] = {}
    await _gather(
        conn,
        accs,
        ranges=_merge_ranges(_day_range(d, zone) for d in days),
        timezone=timezone,
        bucket=Bucket.DAY,
        sets=ROLLUP_GROUPINGS,
        histograms=HISTOGRAMS,
        moves=True,
        convert=lambda d: d,
    )
    records, wanted = [], set(days)
    for (day, mask, values), acc in accs.items():
        if day not in wanted:
            continue  # a move just outside: its own day is built on its own
        records.append(
            (
                timezone,
                day,
                mask,
                *values,
                *(acc.fields[name] for name in FIELDS),
                *(_sparse_text(acc.histograms.get(name)) for name in HISTOGRAMS),
            )
        )
    return records


async def _write_days(
    conn: asyncpg.Connection, timezone: str, days: Sequence[date], records: list[tuple]
) -> None:
    await conn.execute(
        "DELETE FROM kpi_daily WHERE timezone = $1 AND day = ANY($2::date[])", timezone, list(days)
    )
    if records:
        load_columns = ", ".join(
            [f"{name} float8" for name in FIELDS] + [f"{name} text" for name in HISTOGRAMS]
        )
        await conn.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS kpi_daily_load (timezone text, day date,
                    grouping smallint, region text, module text, language text, agent_id text,
                    priority text, channel text, {load_columns}) ON COMMIT DROP"""
        )
        await conn.copy_records_to_table("kpi_daily_load", records=records)
        columns = ", ".join(
            ["timezone", "day", "grouping", *(COLUMN[d] for d in DIMENSIONS), *FIELDS, *HISTOGRAMS]
        )
        values = ", ".join(
            ["timezone", "day", "grouping", *(COLUMN[d] for d in DIMENSIONS), *FIELDS]
            + [f"{name}::sparsevec::vector" for name in HISTOGRAMS]
        )
        await conn.execute(f"INSERT INTO kpi_daily ({columns}) SELECT {values} FROM kpi_daily_load")
        await conn.execute("TRUNCATE kpi_daily_load")  # the next zone of one refresh reuses it
    await conn.execute(
        """INSERT INTO kpi_days (timezone, day) SELECT $1, unnest($2::date[])
           ON CONFLICT (timezone, day) DO UPDATE SET built_at = now()""",
        timezone,
        list(days),
    )


async def _pending_instants(conn: asyncpg.Connection, ids: list[int]) -> list[datetime]:
    """Where pending tickets sit in the rollups (held) and will sit (now): creation and moves."""
    parts = []
    for facts, periods in (("ticket_facts", "ticket_open_periods"), ("kpi_held_facts", "kpi_held_periods")):
        parts += [
            f"SELECT created_at AS at FROM {facts} WHERE ticket_id = ANY($1::bigint[])",
            f"SELECT opened_at FROM {periods} WHERE ticket_id = ANY($1::bigint[])",
            f"SELECT closed_at FROM {periods} WHERE ticket_id = ANY($1::bigint[]) AND closed_at IS NOT NULL",
        ]
    return [r["at"] for r in await conn.fetch(" UNION ".join(parts), ids)]


async def _refresh_once(conn: asyncpg.Connection, budget: int) -> tuple[int, bool]:
    """Rebuild every day a pending ticket touches, and up to `budget` days never built, then
    forget the pending tickets that did not change meanwhile. Returns (zone-days, more to build)."""
    # One snapshot for what is pending, what it touches and the rows rebuilt from it.
    async with conn.transaction(isolation="repeatable_read"):
        await _tune(conn)
        zones = await rollup_timezones(conn)
        pending = await conn.fetch("SELECT ticket_id, version FROM kpi_pending")
        ids = [r["ticket_id"] for r in pending]
        instants = await _pending_instants(conn, ids) if ids else []
        copies = {
            table: await conn.fetch(f"SELECT * FROM {table} WHERE ticket_id = ANY($1::bigint[])", ids)
            for table in HELD
        }
        history = await _history(conn)
        work: dict[str, list[date]] = {}
        more = False
        for timezone in zones:
            zone = ZoneInfo(timezone)
            touched = {at.astimezone(zone).date() for at in instants}
            missing = []
            if history is not None:
                built = {
                    r["day"]
                    for r in await conn.fetch("SELECT day FROM kpi_days WHERE timezone = $1", timezone)
                }
                day, last = history[0].astimezone(zone).date(), history[1].astimezone(zone).date()
                while day <= last:
                    if day not in built and day not in touched:
                        missing.append(day)
                    day += timedelta(days=1)
            more |= len(missing) > budget
            work[timezone] = sorted(touched | set(missing[: max(budget, 0)]))
            budget -= len(missing)
        records = {tz: await _compute_days(conn, tz, days) for tz, days in work.items() if days}
    async with conn.transaction():
        for timezone, days in work.items():
            if days:
                await _write_days(conn, timezone, days, records[timezone])
        if ids:
            # The rollups now hold each pending ticket as the snapshot saw it. Unchanged since:
            # nothing is pending any more. Changed since: what is held is the snapshot's.
            done = {
                r["ticket_id"]
                for r in await conn.fetch(
                    """DELETE FROM kpi_pending p USING unnest($1::bigint[], $2::bigint[]) AS seen(t, v)
                       WHERE p.ticket_id = seen.t AND p.version = seen.v RETURNING p.ticket_id""",
                    ids,
                    [r["version"] for r in pending],
                )
            }
            for table, held in HELD.items():
                await conn.execute(f"DELETE FROM {held} WHERE ticket_id = ANY($1::bigint[])", ids)
                again = [tuple(r.values()) for r in copies[table] if r["ticket_id"] not in done]
                if again:
                    await conn.copy_records_to_table(
                        held, records=again, columns=list(copies[table][0].keys())
                    )
    return sum(len(days) for days in work.values()), more


async def refresh_rollups(conn: asyncpg.Connection, *, max_days: int = 1000) -> int:
    """Bring kpi_daily up to date: the days pending tickets touch, and days never built (a new
    installation, a new time zone), up to about `max_days` zone-days. Returns the zone-days
    rebuilt. Safe anywhere at any time: a second refresh running at once skips its turn."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _REFRESH_LOCK):
        return 0
    try:
        rebuilt, more = 0, True
        while more and rebuilt < max_days:
            done, more = await _refresh_once(conn, min(REFRESH_CHUNK_DAYS, max_days - rebuilt))
            rebuilt += done
        return rebuilt
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _REFRESH_LOCK)


async def rebuild_rollups(conn: asyncpg.Connection) -> int:
    """From scratch, from the facts as they are."""
    async with conn.transaction():
        await conn.execute(
            "TRUNCATE kpi_daily, kpi_days, kpi_pending, kpi_held_facts, kpi_held_legs, kpi_held_periods"
        )
    total = 0
    while rebuilt := await refresh_rollups(conn):
        total += rebuilt
    return total


# --- queries ---------------------------------------------------------------------------------


def _bucket_value(bucket: Bucket, zone: ZoneInfo):
    def convert(value: Any) -> str | None:
        if value is None or bucket is Bucket.NONE:
            return None
        if bucket is Bucket.HOUR:
            return bucket_key(value, bucket, zone)
        return value.isoformat()

    return convert


async def _read_cells(
    conn: asyncpg.Connection,
    accs: dict[Key, Accumulator],
    q: KpiQuery,
    days: Sequence[date],
    *,
    fields: Sequence[str],
    histograms: Iterable[str],
) -> None:
    """Add up kpi_daily rows of these days into per-bucket, per-group accumulators."""
    if not days:
        return
    mask = mask_of(q.group_by)
    dims = [COLUMN[d] for d in DIMENSIONS if d in q.group_by]
    bucket = {Bucket.NONE: "NULL::date", Bucket.DAY: "day", Bucket.WEEK: "date_trunc('week', day)::date"}
    sums = [f"sum({name}) AS {name}" for name in fields]
    # Sparse and binary: only the non-empty bins travel, and they decode in bulk.
    sums += [f"sparsevec_send(sum({name})::sparsevec) AS {name}" for name in histograms]
    wanted = set(days)
    first, last = min(days), max(days)
    skipped = [
        first + timedelta(days=n)
        for n in range((last - first).days)
        if first + timedelta(days=n) not in wanted
    ]
    rows = await conn.fetch(
        f"""SELECT {bucket[q.bucket]} AS bucket, {", ".join(dims + sums)} FROM kpi_daily
            WHERE timezone = $1 AND grouping = $2 AND day BETWEEN $3 AND $4 AND day <> ALL($5::date[])
            GROUP BY {", ".join(["1", *dims])}""",
        q.timezone,
        mask,
        first,
        last,
        skipped,
    )
    positions = [COLUMN[d] if d in q.group_by else None for d in DIMENSIONS]
    for row in rows:
        values = tuple(row[column] if column else None for column in positions)
        key = (row["bucket"].isoformat() if row["bucket"] else None, mask, values)
        acc = _acc(accs, key)
        sums = acc.fields
        for name in fields:
            sums[name] += row[name]
        for name in histograms:
            if row[name] is not None:
                acc.add_histogram(name, _sparse(row[name]))


async def rollup_plan(
    conn: asyncpg.Connection, q: KpiQuery
) -> tuple[list[date], list[tuple[datetime, datetime]]] | None:
    """Days read from kpi_daily and the ranges read from ticket_facts, or None when the rollups
    cannot serve this query at all."""
    if mask_of(q.group_by) not in ROLLUP_MASKS or q.bucket is Bucket.HOUR:
        return None
    if not await conn.fetchval("SELECT true FROM kpi_timezones WHERE timezone = $1", q.timezone):
        return None
    zone = q.zone
    first, last = q.start.astimezone(zone).date(), (q.end - timedelta(microseconds=1)).astimezone(zone).date()
    built = {
        r["day"]
        for r in await conn.fetch(
            "SELECT day FROM kpi_days WHERE timezone = $1 AND day BETWEEN $2 AND $3", q.timezone, first, last
        )
    }
    cell_days, ranges = [], []
    day = first
    while day <= last:
        start, end = _day_range(day, zone)
        if day in built and q.start <= start and end <= q.end:
            cell_days.append(day)
        else:
            ranges.append((max(start, q.start), min(end, q.end)))
        day += timedelta(days=1)
    return cell_days, _merge_ranges(ranges)


async def _backlog(
    conn: asyncpg.Connection, accs: dict[Key, Accumulator], q: KpiQuery, rollups: bool, pending: list[int]
) -> None:
    """Tickets open at each bucket's end (or at `to`): opened before it, not resolved before it."""
    zone, mask = q.zone, mask_of(q.group_by)
    instants = {
        key: bucket_end(key, q.bucket, zone, q.end) for key in bucket_keys(q.start, q.end, q.bucket, zone)
    }
    history = await _history(conn)
    if history is None:
        return
    if rollups:
        # Running totals of the daily moves, from the first day of history.
        first = history[0].astimezone(zone).date()
        last_instant = max(instants.values())
        last = last_instant.astimezone(zone).date()
        built = {
            r["day"]
            for r in await conn.fetch(
                "SELECT day FROM kpi_days WHERE timezone = $1 AND day BETWEEN $2 AND $3",
                q.timezone,
                first,
                last,
            )
        }
        days = [first + timedelta(days=n) for n in range((last - first).days)]
        cell_days = [d for d in days if d in built]
        untils = {key: at.astimezone(zone).date() for key, at in instants.items()}
        totals: dict[tuple[Any, tuple], list[float]] = defaultdict(lambda: [0.0, 0.0])
        if cell_days:
            # The built days' moves, one lean row per day and group, added up as they come.
            dims = [COLUMN[d] for d in DIMENSIONS if d in q.group_by]
            between = days[days.index(cell_days[0]) : days.index(cell_days[-1])]
            # The days before the first bucket's end add up to one row per group: a quarter's
            # buckets read a quarter of rows, not every day since the history began.
            keys = ", ".join([*dims, "CASE WHEN day < $6::date THEN $6::date - 1 ELSE day END"])
            rows = await conn.fetch(
                f"""SELECT {keys} AS day, sum(backlog) AS moved, sum(backlog_created_epoch) AS moved_epoch
                    FROM kpi_daily WHERE timezone = $1 AND grouping = $2 AND day BETWEEN $3 AND $4
                         AND day <> ALL($5::date[])
                    GROUP BY {keys} ORDER BY {keys}""",
                q.timezone,
                mask,
                cell_days[0],
                cell_days[-1],
                sorted(set(between) - set(cell_days)),
                min(untils.values()),
            )
            ends = sorted((until, key) for key, until in untils.items())
            values, count, epoch, i = None, 0.0, 0.0, 0
            for row in [*rows, None]:
                group = (
                    tuple(row[COLUMN[d]] if d in q.group_by else None for d in DIMENSIONS) if row else None
                )
                if group != values or row is None:
                    for _, key in ends[i:] if values is not None else ():
                        totals[(key, values)][0] += count
                        totals[(key, values)][1] += epoch
                    values, count, epoch, i = group, 0.0, 0.0, 0
                if row is None:
                    break
                while i < len(ends) and ends[i][0] <= row["day"]:  # instants before this day
                    totals[(ends[i][1], values)][0] += count
                    totals[(ends[i][1], values)][1] += epoch
                    i += 1
                count += row["moved"]
                epoch += row["moved_epoch"]
        # The rest, day by day: days not built, the part of a day before `to`, and what pending
        # tickets changed on the built days.
        daily: dict[Key, Accumulator] = {}
        ranges = [_day_range(d, zone) for d in days if d not in built]
        midnight = local_midnight(last, zone)
        if last_instant > midnight:
            ranges.append((midnight, last_instant))  # the window ends within a day
        moves_by_day = {
            "timezone": q.timezone,
            "bucket": Bucket.DAY,
            "sets": [q.group_by],
            "histograms": (),
            "cohort": False,
            "moves": True,
            "convert": lambda d: d,
        }
        await _gather(conn, daily, ranges=_merge_ranges(ranges), **moves_by_day)
        built_ranges = _merge_ranges(_day_range(d, zone) for d in cell_days)
        for held in (False, True):
            await _gather(conn, daily, ranges=built_ranges, tickets=pending, held=held, **moves_by_day)
        by_group: dict[tuple, dict[date, Accumulator]] = defaultdict(dict)
        for (day, _, values), acc in daily.items():
            by_group[values][day] = acc
        for values, by_day in by_group.items():
            ordered = sorted(by_day)
            counts = list(itertools.accumulate(by_day[d].fields["backlog"] for d in ordered))
            epochs = list(itertools.accumulate(by_day[d].fields["backlog_created_epoch"] for d in ordered))
            for key, at in instants.items():
                until = untils[key]
                partial = at > local_midnight(until, zone)  # the moves of that day up to `at` count too
                n = bisect.bisect_right(ordered, until) if partial else bisect.bisect_left(ordered, until)
                if n:
                    total = totals[(key, values)]
                    total[0] += counts[n - 1]
                    total[1] += epochs[n - 1]
        for (key, values), (count, epoch) in totals.items():
            if count:
                _acc(accs, (key, mask, values)).add_backlog(count, epoch)
        return
    # Without rollups: the tickets open at the first bucket's end, then each bucket's moves.
    keys = list(instants)
    groups = _Groups([q.group_by], bucket=False)
    rows = await conn.fetch(
        f"""SELECT {groups.select()}, count(*) AS backlog, sum(created_epoch) AS backlog_created_epoch
            FROM (SELECT {_DIMENSIONS_OF_M}, extract(epoch FROM m.created_at)::float8 AS created_epoch
                  FROM ticket_open_periods m
                  WHERE tstzrange(m.opened_at, m.closed_at, '(]') @> $1::timestamptz) w
            {groups.group_by()}""",
        instants[keys[0]],
    )
    running: dict[tuple, list[float]] = {}
    for row in rows:
        running[groups.key(row, None)[2]] = [row["backlog"], row["backlog_created_epoch"]]
    moved: dict[Key, Accumulator] = {}
    if len(keys) > 1:
        await _gather(
            conn,
            moved,
            ranges=[(instants[keys[0]], instants[keys[-1]])],
            timezone=q.timezone,
            bucket=q.bucket,
            sets=[q.group_by],
            histograms=(),
            cohort=False,
            moves=True,
            convert=_bucket_value(q.bucket, zone),
        )
    by_bucket: dict[Any, list[tuple[tuple, Accumulator]]] = defaultdict(list)
    for (bucket, _, values), acc in moved.items():
        by_bucket[bucket].append((values, acc))
    for n, key in enumerate(keys):
        if n:
            for values, acc in by_bucket.get(key, ()):
                total = running.setdefault(values, [0.0, 0.0])
                total[0] += acc.fields["backlog"]
                total[1] += acc.fields["backlog_created_epoch"]
        for values, (count, epoch) in running.items():
            if count:
                _acc(accs, (key, mask, values)).add_backlog(count, epoch)


async def _tune(conn: asyncpg.Connection) -> None:
    # JIT compiling plans that add up a few thousand rows costs more than it saves; the window's
    # rows are read once into memory and aggregated several ways, which needs more than 4 MB.
    await conn.execute("SET LOCAL jit = off")
    await conn.execute("SET LOCAL work_mem = '64MB'")
    # Plans for the window's real bounds: a day and a year want different scans.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


async def query(conn: asyncpg.Connection, q: KpiQuery) -> list[KpiRow]:
    """The KPIs a request asks for, in one consistent snapshot."""
    histograms = histograms_for(q.metrics)
    fields = fields_for(q.metrics)
    accs: dict[Key, Accumulator] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await _tune(conn)
        plan = await rollup_plan(conn, q)
        cell_days, ranges = plan if plan is not None else ([], [(q.start, q.end)])
        cohort = [name for name in COHORT_FIELDS if name in fields]
        await _read_cells(conn, accs, q, cell_days, fields=cohort, histograms=histograms)
        common = {
            "timezone": q.timezone,
            "bucket": q.bucket,
            "sets": [q.group_by],
            "histograms": histograms,
            "fields": fields,
            "convert": _bucket_value(q.bucket, q.zone),
        }
        await _gather(conn, accs, ranges=ranges, **common)
        # Tickets that changed since the rollups were built: their facts now, less what is held.
        pending = [r["ticket_id"] for r in await conn.fetch("SELECT ticket_id FROM kpi_pending")]
        rolled = _merge_ranges(_day_range(d, q.zone) for d in cell_days)
        for held in (False, True):
            await _gather(conn, accs, ranges=rolled, tickets=pending, held=held, **common)
        if BACKLOG_METRICS & set(q.metrics):
            await _backlog(conn, accs, q, plan is not None, pending)
    cells = {
        (bucket, tuple(values[DIMENSIONS.index(d)] for d in q.group_by)): acc
        for (bucket, _, values), acc in accs.items()
    }
    return finish(q, cells)
