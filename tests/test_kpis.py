"""KPIs from the timeline: every definition of docs/kpis.md on hand-built timelines with known
answers (DST, reopen, handoff, pause), the same numbers from PostgreSQL whichever path a day
takes (ticket facts, daily rollups, rollups gone stale), and GET /v1/kpis as JSON and CSV."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import pytest_asyncio

from db import kpis
from domain.calendars import BusinessCalendar, OpeningHours
from domain.enums import ActorType
from domain.kpis import (
    METRICS,
    Bucket,
    KpiQuery,
    OpenWindows,
    TicketFacts,
    aggregate,
    bin_of,
    facts_from_timeline,
    grid,
    link_repeats,
    percentile,
)
from domain.tickets import Actor, TimelineEvent
from tests.conftest import add_customer, saved_ticket
from tests.test_api import file_ticket, make_agent, make_customer

MONDAY = datetime(2026, 3, 2, 9, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
MIN = 60.0
ALL = tuple(METRICS)


class Story:
    """A hand-built timeline: each event so many minutes after the ticket was created."""

    def __init__(self, start: datetime = MONDAY, channel: str = "email"):
        self.start = start
        self.events = [
            TimelineEvent(seq=1, at=start, kind="created", actor=Actor.system(), data={"channel": channel})
        ]

    def then(self, minutes: float, kind: str, data: dict | None = None, *, internal=False, region=None):
        actor = Actor(type=ActorType.AGENT if kind == "agent_reply" else ActorType.SYSTEM, region=region)
        at = self.start + timedelta(minutes=minutes)
        seq = len(self.events) + 1
        self.events.append(
            TimelineEvent(
                seq=seq, at=at, kind=kind, actor=actor, region=region, internal=internal, data=data or {}
            )
        )
        return self

    def triaged(self, minutes=1, *, region="emea", module="billing", language="en", priority="P3"):
        data = {"language": language, "module": module, "priority": priority}
        return self.then(minutes, "triaged", data, internal=True, region=region)

    def assigned(self, minutes, agent="alice", region="emea"):
        return self.then(minutes, "assigned", {"agent_id": agent, "agent_region": region}, internal=True)

    def reply(self, minutes, agent="alice"):
        return self.then(minutes, "agent_reply", {"agent_id": agent, "body": "..."})

    def note(self, minutes, agent="alice"):
        return self.then(minutes, "internal_note", {"agent_id": agent}, internal=True)

    def message(self, minutes, **data):
        return self.then(minutes, "customer_message", {"body": "...", **data})

    def status(self, minutes, old, new):
        return self.then(minutes, "status_changed", {"from": old, "to": new})

    def resolved(self, minutes, **data):
        return self.then(minutes, "resolved", data)

    def reopened(self, minutes):
        return self.then(minutes, "reopened", {"reason": "customer wrote again"})

    def handed_off(self, minutes, to_agent, to_region, from_agent="alice", from_region="emea"):
        data = {"from_agent_id": from_agent, "from_region": from_region}
        data |= {"to_agent_id": to_agent, "to_region": to_region}
        return self.then(minutes, "handed_off", data, internal=True, region=from_region)

    def breach(self, minutes, target):
        return self.then(minutes, "sla_breached", {"target": target}, internal=True)

    def facts(self, ticket_id=1, customer="acme", **kwargs) -> TicketFacts:
        return facts_from_timeline(self.events, ticket_id=ticket_id, customer_id=customer, **kwargs)

    async def save(self, pool: asyncpg.Pool, customer: str = "acme") -> int:
        channel = self.events[0].data["channel"]
        row = await saved_ticket(pool, customer, created_at=self.start, channel=channel)
        await append(pool, row["id"], self.events[1:])
        return row["id"]


async def append(pool: asyncpg.Pool, ticket_id: int, events: list[TimelineEvent]) -> None:
    """Events as the projection writes them (the timeline only ever grows)."""
    async with pool.acquire() as conn:
        await conn.executemany(
            """INSERT INTO ticket_events (ticket_id, seq, at, kind, actor, region, internal, data)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            [
                (
                    ticket_id,
                    e.seq,
                    e.at,
                    e.kind,
                    e.actor.model_dump(mode="json"),
                    e.region,
                    e.internal,
                    e.data,
                )
                for e in events
            ],
        )


def conversation() -> Story:
    """Answered in 30 min, a follow-up answered in 15, two hours waiting on the customer."""
    return (
        Story()
        .triaged(1)
        .assigned(2)
        .message(10)  # more detail before the first answer: still the same wait
        .note(20)
        .reply(30)
        .message(60)
        .message(65)  # a second message before the answer: one wait, from the first
        .reply(75)
        .status(80, "open", "pending_customer")
        .status(200, "pending_customer", "open")
        .resolved(300)
        .then(360, "csat_sent")
        .then(400, "csat_received", {"score": 5, "comment": "great"})
    )


def query(**changes) -> KpiQuery:
    values = {"start": MONDAY - timedelta(days=1), "end": MONDAY + timedelta(days=30), "metrics": ALL}
    return KpiQuery(**(values | changes))


def only(rows, **group):
    matching = [r for r in rows if all(r.group.get(k) == v for k, v in group.items())]
    assert len(matching) == 1, rows
    return matching[0].values


# --- one ticket's facts ------------------------------------------------------------------------


def test_first_and_next_responses_and_a_pending_pause():
    f = conversation().facts()
    assert f.first_response_seconds == 30 * MIN and f.first_response_business_seconds == 30 * MIN
    assert [(w.seconds, w.answered) for w in f.waits] == [(15 * MIN, True)]
    # Calendar resolution is the customer's wait; business resolution leaves out the pause.
    assert f.resolution_seconds == 300 * MIN and f.pending_seconds == 120 * MIN
    assert f.resolution_business_seconds == 180 * MIN
    assert (f.region, f.agent_id, f.module, f.language, f.priority, f.channel) == (
        "emea",
        "alice",
        "billing",
        "en",
        "P3",
        "email",
    )
    assert f.csat_sent == 1 and f.csat_scores == [5]
    assert f.sla == {"first_response": "met", "resolution": "met", "periodic_update": "met"}
    assert not f.first_contact  # two answers and a follow-up question
    (leg,) = f.legs
    assert (leg.region, leg.agent_id, leg.response_seconds, leg.held_seconds) == (
        "emea",
        "alice",
        30 * MIN,
        300 * MIN,
    )


def test_a_reopen_never_changes_the_first_response():
    story = Story().triaged(1).assigned(2).reply(20).resolved(60)
    story.message(100).reopened(100).assigned(101, "bob", "americas").reply(130).resolved(200)
    f = story.facts()
    assert f.first_response_seconds == 20 * MIN and f.first_response_at == MONDAY + timedelta(minutes=20)
    assert f.reopens == 1 and f.resolutions == 2
    # Resolution runs to the last resolution; its business time leaves out the resolved gap.
    assert f.resolution_seconds == 200 * MIN and f.resolution_business_seconds == 160 * MIN
    assert [w.seconds for w in f.waits] == [30 * MIN]  # the reopening message waited 30 min
    assert [(p.opened_at, p.closed_at) for p in f.open_periods] == [
        (MONDAY, MONDAY + timedelta(minutes=60)),
        (MONDAY + timedelta(minutes=100), MONDAY + timedelta(minutes=200)),
    ]
    assert [(leg.region, leg.agent_id, leg.response_seconds) for leg in f.legs] == [
        ("emea", "alice", 20 * MIN),
        ("americas", "bob", 30 * MIN),
    ]
    assert (f.region, f.agent_id) == ("americas", "bob") and not f.first_contact


def test_a_handoff_gives_each_region_its_own_leg():
    story = Story().triaged(1).assigned(2).reply(10).message(50)
    story.handed_off(60, "carlos", "americas").then(60, "team_changed", {"region": "americas"})
    story.reply(90, "carlos").resolved(120)
    f = story.facts()
    assert f.handoffs == 1 and f.waits[0].seconds == 40 * MIN  # the customer waited 40 min in all
    emea, americas = f.legs
    assert (emea.region, emea.held_seconds, emea.response_seconds) == ("emea", 60 * MIN, 10 * MIN)
    # The Americas answered 30 min after the ticket reached them: their own response time.
    assert (americas.region, americas.agent_id, americas.response_seconds) == ("americas", "carlos", 30 * MIN)
    assert americas.started_at == MONDAY + timedelta(minutes=60) and americas.held_seconds == 60 * MIN
    assert (f.region, f.agent_id) == ("americas", "carlos")


def test_a_handoff_to_nobody_belongs_to_the_region_that_takes_the_ticket_next():
    story = Story().triaged(1).assigned(2).reply(10).message(50)
    story.handed_off(60, None, None).assigned(80, "kenji", "apac").reply(95, "kenji").resolved(100)
    emea, apac = story.facts().legs
    assert (emea.region, emea.ended_at) == ("emea", MONDAY + timedelta(minutes=60))
    assert (apac.region, apac.started_at, apac.response_seconds) == (
        "apac",
        MONDAY + timedelta(minutes=60),
        35 * MIN,
    )
    unanswered = Story().triaged(1).assigned(2).handed_off(30, "kenji", "apac").reply(45, "kenji").facts()
    assert [(leg.region, leg.owed_from is not None, leg.response_seconds) for leg in unanswered.legs] == [
        ("emea", True, None),  # the customer waited and EMEA never answered
        ("apac", True, 15 * MIN),
    ]


def test_business_time_counts_only_the_customer_calendar():
    calendar = BusinessCalendar(
        id="nyc",
        name="NYC office",
        timezone="America/New_York",
        hours=[OpeningHours(day=d, start=time(9), end=time(17)) for d in range(1, 6)],
    )
    friday_4pm = datetime(2026, 3, 6, 16, tzinfo=NEW_YORK).astimezone(UTC)
    clock = OpenWindows(calendar.windows(friday_4pm, friday_4pm + timedelta(days=10)))

    def monday(hour: int) -> float:  # after the weekend of the DST change
        return (datetime(2026, 3, 9, hour, tzinfo=NEW_YORK) - friday_4pm).total_seconds() / 60

    story = Story(friday_4pm).triaged(1).assigned(2).reply(monday(10))
    story.status(monday(11), "open", "pending_customer").status(monday(14), "pending_customer", "open")
    f = story.resolved(monday(15)).facts(clock=clock)
    assert f.first_response_seconds == timedelta(days=2, hours=17).total_seconds()
    assert f.first_response_business_seconds == 2 * 3600  # Friday 16-17, Monday 9-10
    assert f.resolution_business_seconds == 4 * 3600  # 16-17, 9-11, 14-15: the pause 11-14 left out


def test_sla_verdicts_come_from_the_timeline_and_the_policy():
    breached = Story().triaged(1).assigned(2).breach(15, "first_response").reply(20).message(30)
    breached.breach(90, "next_response").reply(95).message(100).reply(101).resolved(120)
    f = breached.facts(sla_targets=frozenset({"first_response", "next_response", "resolution"}))
    assert f.sla == {"first_response": "breached", "resolution": "met"}  # no periodic update for P3
    assert [(w.answered, w.breached) for w in f.waits] == [(True, True), (True, False)]
    pending = Story().triaged(1).assigned(2).facts()
    assert pending.sla == {} and pending.resolved_at is None


def test_self_service_first_contact_escalations_csat_and_repeats():
    deflected = Story().triaged(1).then(1, "suggested_articles").resolved(30, self_service=True, article_id=7)
    one_touch = Story(MONDAY + timedelta(days=3)).triaged(1).assigned(2).reply(20).resolved(21)
    escalated = (
        Story(MONDAY + timedelta(hours=1)).triaged(1, module="api").assigned(2).breach(60, "resolution")
    )
    escalated.then(60, "escalated", {"level": 1}).then(75, "escalated", {"level": 2}).reply(80)
    escalated.then(90, "escalation_acknowledged").resolved(100).then(160, "csat_sent").then(
        500, "csat_expired"
    )
    escalated.message(600).reopened(600).assigned(601).resolved(700).then(760, "csat_sent")
    escalated.then(800, "csat_received", {"score": 2})
    facts = [
        deflected.facts(1, "acme"),
        one_touch.facts(2, "acme"),
        escalated.facts(3, "acme"),
        Story(MONDAY + timedelta(days=12)).triaged(1).facts(4, "acme"),
    ]
    link_repeats(facts)
    assert facts[0].first_response_at is None and facts[0].self_service and facts[0].legs[0].region == "emea"
    assert facts[1].first_contact and facts[1].previous_same_issue_at == MONDAY
    (values,) = [r.values for r in aggregate(facts, query())]
    assert values["tickets"] == 4
    assert values["kb_deflection_rate"] == 1 / 4
    assert values["first_contact_resolution_rate"] == 1 / 2  # of the two resolved by an agent
    assert values["escalations"] == 1 and values["escalation_rate"] == 1 / 4
    assert values["reopen_rate"] == 1 / 3  # of the three ever resolved
    assert (values["csat_sent"], values["csat_received"], values["csat_mean"]) == (2, 1, 2)
    assert values["csat_response_rate"] == 1 / 2 and values["csat_satisfied_rate"] == 0
    # A self-service resolution stops every clock in time: its targets are met.
    assert values["sla_first_response_attainment"] == 1 and values["sla_resolution_attainment"] == 2 / 3
    assert values["repeat_rate"] == 1 / 4  # ticket 2, three days after ticket 1; ticket 4 is 9 days on
    assert only(aggregate(facts, query(repeat_days=14)))["repeat_rate"] == 2 / 4
    assert values["handoffs_per_ticket"] == 0 and values["backlog"] == 1  # ticket 4 waits still


# --- percentiles and buckets -------------------------------------------------------------------


def test_percentiles_are_percentile_cont_over_the_grid():
    facts = [Story().triaged(1).assigned(2).reply(m).facts(n) for n, m in enumerate((10, 20, 30))]
    values = only(aggregate(facts, query()))
    assert values["first_response_mean"] == 20 * MIN  # means are exact
    assert values["first_response_p50"] == grid(20 * MIN)
    assert values["first_response_p90"] == pytest.approx(
        grid(20 * MIN) + 0.8 * (grid(30 * MIN) - grid(20 * MIN))
    )
    rng = random.Random(5)
    for _ in range(200):
        sample = sorted(rng.lognormvariate(7, 2) for _ in range(rng.randint(1, 60)))
        histogram: dict[int, float] = {}
        for value in sample:
            histogram[bin_of(value)] = histogram.get(bin_of(value), 0) + 1
        for fraction in (0.5, 0.9):
            rank = fraction * (len(sample) - 1)
            exact = sample[int(rank)] + (rank - int(rank)) * (
                sample[min(int(rank) + 1, len(sample) - 1)] - sample[int(rank)]
            )
            assert percentile(histogram, fraction) == pytest.approx(exact, rel=0.022, abs=1)


def test_day_buckets_follow_new_york_across_the_march_change():
    # Clocks go from 02:00 EST to 03:00 EDT on 8 March 2026: that day is 23 hours long.
    created = ["2026-03-08T04:30Z", "2026-03-08T05:30Z", "2026-03-09T03:30Z", "2026-03-09T04:30Z"]
    facts = [
        Story(datetime.fromisoformat(at)).triaged(1).assigned(2).reply(10 * (n + 1)).resolved(600).facts(n)
        for n, at in enumerate(created)
    ]
    window = {"start": datetime(2026, 3, 1, tzinfo=UTC), "end": datetime(2026, 3, 15, tzinfo=UTC)}
    local = aggregate(facts, query(**window, bucket=Bucket.DAY, timezone="America/New_York"))
    assert [(r.bucket, r.values["tickets"]) for r in local] == [
        ("2026-03-07", 1),
        ("2026-03-08", 2),
        ("2026-03-09", 1),
    ]
    assert local[1].values["first_response_mean"] == 25 * MIN
    utc = aggregate(facts, query(**window, bucket=Bucket.DAY, timezone="UTC"))
    assert [(r.bucket, r.values["tickets"]) for r in utc] == [("2026-03-08", 2), ("2026-03-09", 2)]
    weekly = aggregate(facts, query(**window, bucket=Bucket.WEEK, timezone="America/New_York"))
    assert [(r.bucket, r.values["tickets"]) for r in weekly] == [("2026-03-02", 3), ("2026-03-09", 1)]
    hours = aggregate(
        facts,
        query(
            start=datetime(2026, 3, 8, 5, tzinfo=UTC),
            end=datetime(2026, 3, 8, 8, tzinfo=UTC),
            bucket=Bucket.HOUR,
            timezone="America/New_York",
        ),
    )
    # After 01:00 EST comes 03:00 EDT: the hour 02:00 does not exist that night.
    assert [(r.bucket, r.values["tickets"], r.values["backlog"]) for r in hours] == [
        ("2026-03-08T00:00:00-05:00", 1, 2),
        ("2026-03-08T01:00:00-05:00", 0, 2),
        ("2026-03-08T03:00:00-04:00", 0, 2),
    ]
    # The backlog of a local day is counted at its local end: midnight EDT is 04:00 UTC.
    ends = aggregate(
        facts, query(**window, bucket=Bucket.DAY, timezone="America/New_York", metrics=("backlog",))
    )
    # (at 05:00 UTC, a day taken as 24 hours, the ticket of 04:30 would be in it too)
    assert [(r.bucket, r.values["backlog"]) for r in ends] == [
        ("2026-03-07", 1),
        ("2026-03-08", 1),
        ("2026-03-09", 0),
    ]


def test_hour_buckets_keep_the_repeated_autumn_hour_apart():
    # 1 November 2026: 01:00-02:00 happens twice in New York, once in EDT and once in EST.
    created = ["2026-11-01T05:10Z", "2026-11-01T06:10Z", "2026-11-01T06:50Z"]
    facts = [Story(datetime.fromisoformat(at)).triaged(1).facts(n) for n, at in enumerate(created)]
    rows = aggregate(
        facts,
        query(
            start=datetime(2026, 11, 1, 4, tzinfo=UTC),
            end=datetime(2026, 11, 1, 8, tzinfo=UTC),
            bucket=Bucket.HOUR,
            timezone="America/New_York",
            metrics=("tickets",),
        ),
    )
    assert [(r.bucket, r.values["tickets"]) for r in rows] == [
        ("2026-11-01T01:00:00-04:00", 1),
        ("2026-11-01T01:00:00-05:00", 2),
    ]


def test_queries_are_checked():
    with pytest.raises(ValueError, match="before"):
        query(end=MONDAY - timedelta(days=2))
    with pytest.raises(ValueError, match="unknown group_by"):
        query(group_by=("planet",))
    with pytest.raises(ValueError, match="unknown metrics"):
        query(metrics=("happiness",))
    with pytest.raises(ValueError, match="time zone"):
        query(timezone="Mars/Olympus")


# --- through PostgreSQL ------------------------------------------------------------------------

REGIONS = {"emea": ["alice", "anna"], "americas": ["bob", "carlos"], "apac": ["kenji", "mei"]}


def random_story(rng: random.Random, start: datetime) -> Story:
    """Tickets of every shape: reopened, handed off, paused, surveyed, breached, deflected."""
    region = rng.choice(list(REGIONS))
    story = Story(start, channel=rng.choice(["email", "web", "api"])).triaged(
        rng.randint(1, 3),
        region=region,
        module=rng.choice(["billing", "api", "video"]),
        language=rng.choice(["en", "es", "ja"]),
        priority=rng.choice(["P1", "P2", "P3", "P4"]),
    )
    t = 4.0
    if rng.random() < 0.1:
        return story.resolved(rng.uniform(5, 60), self_service=True, article_id=1)
    agent = rng.choice(REGIONS[region])
    story.assigned(t + rng.expovariate(1 / 30), agent, region)
    t = story.events[-1].at - start
    t = t.total_seconds() / 60
    for _ in range(rng.randint(0, 3)):
        t += rng.expovariate(1 / 90)
        if rng.random() < 0.3:
            story.message(t)
        elif rng.random() < 0.2:
            other = rng.choice([r for r in REGIONS if r != region])
            new_agent = rng.choice(REGIONS[other])
            story.handed_off(t, new_agent, other, agent, region)
            region, agent = other, new_agent
        elif rng.random() < 0.2:
            story.status(t, "open", "pending_customer").status(t + 120, "pending_customer", "open")
            t += 120
        else:
            story.reply(t, agent)
        if rng.random() < 0.15:
            story.breach(t + 1, rng.choice(["first_response", "resolution", "next_response"]))
    if rng.random() < 0.2:
        return story  # still open
    t += rng.expovariate(1 / 200)
    story.resolved(t)
    if rng.random() < 0.5:
        story.then(t + 60, "csat_sent")
        if rng.random() < 0.6:
            story.then(t + 120, "csat_received", {"score": rng.randint(1, 5)})
    if rng.random() < 0.2:
        story.message(t + 200).reopened(t + 200).assigned(t + 230, agent, region).reply(t + 260, agent)
        story.resolved(t + 300)
    return story


@pytest_asyncio.fixture(loop_scope="session")
async def kpi_db(db: asyncpg.Pool) -> asyncpg.Pool:
    async with db.acquire() as conn:
        await conn.execute("TRUNCATE kpi_daily, kpi_days")
    for customer in ("acme", "globex", "sakura"):
        await add_customer(db, customer)
    return db


async def saved(
    pool: asyncpg.Pool, stories: list[Story], customers=("acme", "globex", "sakura")
) -> list[int]:
    ids = []
    for n, story in enumerate(stories):
        ticket_id = await story.save(pool, customers[n % len(customers)])
        async with pool.acquire() as conn:
            await kpis.refresh_ticket_facts(conn, ticket_id)
        ids.append(ticket_id)
    return ids


async def stored_facts(pool: asyncpg.Pool, ids: list[int]) -> list[TicketFacts]:
    async with pool.acquire() as conn:
        facts = await kpis.compute_facts(conn, ids)
        previous = {
            r["ticket_id"]: r["previous_same_issue_at"]
            for r in await conn.fetch("SELECT ticket_id, previous_same_issue_at FROM ticket_facts")
        }
    for f in facts:
        f.previous_same_issue_at = previous[f.ticket_id]
    return facts


def same(rows_a, rows_b) -> None:
    assert [(r.bucket, r.group) for r in rows_a] == [(r.bucket, r.group) for r in rows_b]
    for a, b in zip(rows_a, rows_b, strict=True):
        for name, value in a.values.items():
            expected = value if value is None else pytest.approx(value, rel=1e-9, abs=1e-6)
            assert b.values[name] == expected, (a.bucket, a.group, name)


QUERIES = [
    {},
    {"group_by": ("region",), "bucket": Bucket.DAY, "timezone": "America/New_York"},
    {"group_by": ("region", "module"), "bucket": Bucket.WEEK, "timezone": "Asia/Singapore"},
    {"group_by": ("agent",), "timezone": "UTC"},
    {"group_by": ("language", "priority"), "bucket": Bucket.DAY, "timezone": "Europe/Dublin"},
    {"group_by": ("channel",), "bucket": Bucket.HOUR, "timezone": "Asia/Kolkata"},
    {"group_by": ("agent", "priority"), "bucket": Bucket.DAY, "timezone": "Europe/Dublin"},
    {"group_by": ("region", "language", "channel"), "timezone": "America/New_York"},
    {"group_by": ("module", "channel"), "timezone": "Asia/Singapore"},
    # Hours across New York's spring-forward (8 March), and in a zone half an hour off UTC.
    {"group_by": ("region",), "bucket": Bucket.HOUR, "timezone": "America/New_York"},
    {"bucket": Bucket.HOUR, "timezone": "Australia/Adelaide"},
]


async def test_postgresql_agrees_with_the_timeline_on_every_path(kpi_db, monkeypatch):
    rng = random.Random(11)
    # Around the March change in New York, at all hours.
    stories = [
        random_story(rng, datetime(2026, 3, 6, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 4 * 24 * 60)))
        for _ in range(60)
    ]
    ids = await saved(kpi_db, stories)
    facts = await stored_facts(kpi_db, ids)
    assert sum(f.previous_same_issue_at is not None for f in facts) > 10  # repeats were linked
    window = {"start": datetime(2026, 3, 6, 5, 30, tzinfo=UTC), "end": datetime(2026, 3, 9, 22, tzinfo=UTC)}
    queries = [query(**window, **q) for q in QUERIES]

    async def answers() -> list:
        async with kpi_db.acquire() as conn:
            return [await kpis.query(conn, q) for q in queries]

    expected = [aggregate(facts, q) for q in queries]
    for got, want in zip(await answers(), expected, strict=True):  # from ticket_facts alone
        same(want, got)
    with monkeypatch.context() as hours:  # hour buckets the slow way, as for Lord Howe Island
        hours.setattr(kpis, "_hour_origin", lambda timezone, ranges: None)
        for got, want in zip(await answers(), expected, strict=True):
            same(want, got)
    async with kpi_db.acquire() as conn:
        assert await kpis.refresh_rollups(conn) > 0
        assert await conn.fetchval("SELECT count(*) FROM kpi_pending") == 0
        days, edges = await kpis.rollup_plan(conn, queries[1])
        assert len(days) == 2 and len(edges) == 2  # 7 and 8 March in New York, and two partial days
        assert await kpis.rollup_plan(conn, queries[4]) is not None  # a pair of dimensions
        assert await kpis.rollup_plan(conn, queries[6]) is None  # agent x priority: no rollup
        assert await kpis.rollup_plan(conn, queries[7]) is None  # three dimensions: no rollup
        assert await kpis.rollup_plan(conn, queries[8]) is None  # a channel pair: no rollup
    for got, want in zip(await answers(), expected, strict=True):  # from the rollups where they can
        same(want, got)

    # A ticket moves on after the rollups were built: until the next refresh, queries add its
    # facts now and take away those the rollups hold.
    story = stories[0].message(5000).reopened(5000)
    await append(kpi_db, ids[0], story.events[-2:])
    async with kpi_db.acquire() as conn:
        assert (await kpis.refresh_ticket_facts(conn, ids[0])).reopens == facts[0].reopens + 1
        assert await conn.fetchval("SELECT count(*) FROM kpi_held_facts") == 1  # as the rollups hold it
    facts = await stored_facts(kpi_db, ids)
    expected = [aggregate(facts, q) for q in queries]
    for got, want in zip(await answers(), expected, strict=True):
        same(want, got)
    async with kpi_db.acquire() as conn:
        await kpis.refresh_rollups(conn)
    for got, want in zip(await answers(), expected, strict=True):
        same(want, got)


async def test_a_ticket_changing_while_the_rollups_refresh_is_not_lost(kpi_db, monkeypatch):
    rng = random.Random(3)
    stories = [conversation()] + [
        random_story(rng, MONDAY + timedelta(hours=rng.randint(0, 96))) for _ in range(20)
    ]
    ids = await saved(kpi_db, stories)
    async with kpi_db.acquire() as conn:
        await kpis.refresh_rollups(conn)
    window = query(group_by=("region",), bucket=Bucket.DAY, timezone="Europe/Dublin")
    reopened = stories[0].message(500).reopened(500)
    await append(kpi_db, ids[0], reopened.events[-2:])
    async with kpi_db.acquire() as conn:
        await kpis.refresh_ticket_facts(conn, ids[0])  # pending, with its first facts held
    answered = reopened.assigned(501, "bob", "americas").reply(520, "bob").resolved(530)
    compute_days, raced = kpis._compute_days, []

    async def change_meanwhile(conn, timezone, days):
        if not raced:  # after the refresh took its snapshot, before it writes
            raced.append(True)
            await append(kpi_db, ids[0], answered.events[-3:])
            async with kpi_db.acquire() as other:
                await kpis.refresh_ticket_facts(other, ids[0])
        return await compute_days(conn, timezone, days)

    monkeypatch.setattr(kpis, "_compute_days", change_meanwhile)
    async with kpi_db.acquire() as conn:
        await kpis.refresh_rollups(conn)
        # Still pending, now held as the refresh saw it: reopened, not yet resolved again.
        assert await conn.fetchval("SELECT ticket_id FROM kpi_pending") == ids[0]
        assert await conn.fetchval("SELECT reopens FROM kpi_held_facts") == 1
        assert await conn.fetchval("SELECT resolved_at FROM kpi_held_facts") is None
        got = await kpis.query(conn, window)
    same(aggregate(await stored_facts(kpi_db, ids), window), got)
    monkeypatch.undo()
    async with kpi_db.acquire() as conn:
        await kpis.refresh_rollups(conn)
        assert await conn.fetchval("SELECT count(*) FROM kpi_pending") == 0
        got = await kpis.query(conn, window)
    same(aggregate(await stored_facts(kpi_db, ids), window), got)


async def test_facts_refresh_only_when_the_timeline_grew_and_backfill_catches_up(kpi_db):
    (ticket_id,) = await saved(kpi_db, [conversation()])
    async with kpi_db.acquire() as conn:
        assert await kpis.refresh_ticket_facts(conn, ticket_id) is None  # nothing new
        row = await conn.fetchrow("SELECT * FROM ticket_facts WHERE ticket_id = $1", ticket_id)
        assert (row["first_response_s"], row["resolution_bs"], row["nr_sum_s"]) == (1800, 10800, 900)
        assert (row["first_response_bin"], list(row["nr_bins"])) == (bin_of(1800), [bin_of(900)])
        legs = await conn.fetch("SELECT * FROM ticket_legs WHERE ticket_id = $1", ticket_id)
        assert [(r["region"], r["response_s"]) for r in legs] == [("emea", 1800)]
        await conn.execute("DELETE FROM ticket_legs")
        await conn.execute("DELETE FROM ticket_open_periods")
        await conn.execute("DELETE FROM ticket_facts")
    assert await kpis.backfill(kpi_db) == 1
    async with kpi_db.acquire() as conn:
        assert (
            await conn.fetchval("SELECT first_response_s FROM ticket_facts WHERE ticket_id = $1", ticket_id)
            == 1800
        )
        assert await conn.fetchval("SELECT count(*) FROM kpi_days WHERE timezone = 'UTC'") >= 1
        rows = await kpis.query(conn, query(metrics=("tickets", "resolution_business_mean")))
    assert only(rows)["resolution_business_mean"] == 180 * MIN


# --- through the API ---------------------------------------------------------------------------


async def test_kpis_through_the_api_as_json_and_csv(api, kpi_db):
    apac = Story(MONDAY + timedelta(hours=30)).triaged(1, region="apac").assigned(2, "kenji", "apac")
    await saved(kpi_db, [conversation(), apac.reply(45, "kenji")])
    metrics = "tickets,first_response_p50,first_response_mean,resolution_business_mean,backlog"
    params = {"from": "2026-03-01", "to": "2026-03-08", "tz": "America/New_York", "group_by": "region"}
    params |= {"bucket": "day", "metrics": metrics}
    response = await api.http.get("/v1/kpis", params=params, headers=api.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timezone"] == "America/New_York" and body["units"]["first_response_mean"] == "seconds"
    assert body["start"] == "2026-03-01T05:00:00Z"  # a date is local midnight
    # The APAC ticket is never resolved: it stays in that region's backlog at each day's end.
    assert [
        (r["bucket"], r["group"]["region"], r["values"]["tickets"], r["values"]["backlog"])
        for r in body["rows"]
    ] == [
        ("2026-03-02", "emea", 1, 0),
        ("2026-03-03", "apac", 1, 1),
        *((f"2026-03-0{d}", "apac", 0, 1) for d in range(4, 8)),
    ]
    emea = body["rows"][0]["values"]
    assert emea["first_response_mean"] == 1800 and emea["resolution_business_mean"] == 10800
    assert emea["first_response_p50"] == pytest.approx(grid(1800))

    response = await api.http.get("/v1/kpis", params=params, headers={**api.admin, "Accept": "text/csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["bucket", "region", *metrics.split(",")]
    assert table[1][:3] == ["2026-03-02", "emea", "1.0"] and float(table[1][4]) == 1800
    assert len(table) == 1 + len(body["rows"])

    customer = await make_customer(api, "initech")
    response = await api.http.get("/v1/kpis", params=params, headers=api.as_token(customer))
    assert response.status_code == 403
    assert (await api.http.get("/v1/kpis", params=params)).status_code == 401
    bad = [
        ({"tz": "Mars/Olympus"}, "time zone"),
        ({"metrics": "happiness"}, "unknown metrics"),
        ({"group_by": "planet"}, "unknown group_by"),
        ({"to": "2026-02-01"}, "before"),
        ({"from": "2024-01-01"}, "at most 400"),
        ({"bucket": "hour", "from": "2026-01-01"}, "hour buckets"),
        ({"bucket": "month"}, "bucket"),
        ({"from": "2026-03-01T00:00:00"}, "offset"),
        ({"from": "yesterday"}, "ISO 8601"),
        ({"repeat_days": 3}, "repeat_days"),
    ]
    for change, reason in bad:
        response = await api.http.get("/v1/kpis", params=params | change, headers=api.admin)
        assert response.status_code == 422, (change, response.text)
        assert reason in response.text, (change, response.text)
    response = await api.http.get(
        "/v1/kpis", params=params | {"bucket": "hour", "metrics": "all"}, headers=api.admin
    )
    assert response.status_code == 200 and set(response.json()["metrics"]) == set(METRICS)


async def test_the_projection_keeps_a_live_tickets_facts_current(api, kpi_db):
    agent = api.as_token(await make_agent(api, "alice"))
    ticket = await file_ticket(api, await make_customer(api, "umbrella"))
    await api.wait_for(ticket["id"], lambda t: t["status"] == "open")
    response = await api.http.post(
        f"/v1/tickets/{ticket['id']}/replies", json={"body": "On it"}, headers=agent
    )
    assert response.status_code == 201, response.text
    response = await api.http.post(
        f"/v1/tickets/{ticket['id']}/resolve", json={"resolution": "Done"}, headers=agent
    )
    assert response.status_code == 200, response.text
    async with kpi_db.acquire() as conn:  # updates answer after the projection, and the facts with it
        facts = await conn.fetchrow("SELECT * FROM ticket_facts WHERE ticket_id = $1", ticket["id"])
        legs = await conn.fetch("SELECT region, agent_id FROM ticket_legs WHERE ticket_id = $1", ticket["id"])
    assert facts["first_response_s"] > 0 and facts["resolution_s"] >= facts["first_response_s"]
    assert (facts["region"], facts["agent_id"], facts["module"], facts["sla_first_response"]) == (
        "emea",
        "alice",
        "billing",
        "met",
    )
    assert [tuple(r) for r in legs] == [("emea", "alice")]
    today = datetime.now(UTC).date()
    params = {
        "from": today.isoformat(),
        "to": (today + timedelta(days=1)).isoformat(),
        "metrics": "tickets,resolved",
    }
    response = await api.http.get("/v1/kpis", params=params, headers=api.admin)
    assert [r["values"] for r in response.json()["rows"]] == [{"tickets": 1, "resolved": 1}]


def test_hours_are_arithmetic_only_where_the_offset_moves_by_whole_hours():
    march = [(datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))]
    assert kpis._hour_origin("America/New_York", march) == datetime(2026, 3, 6, tzinfo=UTC)
    assert kpis._hour_origin("Asia/Kolkata", march) == datetime(2026, 3, 5, 23, 30, tzinfo=UTC)
    april = [(datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 20, tzinfo=UTC))]
    assert kpis._hour_origin("Australia/Lord_Howe", april) is None  # summer time is half an hour
