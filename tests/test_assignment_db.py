"""Assignment bookkeeping and the ticket read model against the real PostgreSQL.

Every test starts from the emptied database of the `db` fixture (three regions, nobody else) and
adds the agents, customers and tickets it needs. Tickets are inserted with `create_ticket`, so
the foreign keys from claims, queue rows and offers hold.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, time, timedelta

import asyncpg
import pytest

from db import directory, tickets
from db.assignment import (
    AssignmentRefused,
    ClaimOutcome,
    claim_agent,
    claim_best_agent,
    dispatch_queue,
    forget_offer,
    release_agent,
    stale_offers,
    withdraw_offer,
)
from domain.enums import LanguageLevel, Priority, TicketStatus
from domain.routing import Shift
from domain.sla import SlaClockState, SlaTarget
from domain.tickets import Actor, ProjectionBatch, SlaView, TicketSnapshot, TimelineEvent
from tests.conftest import add_agent, add_customer, saved_ticket

T0 = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)  # a Monday
NOW = T0 + timedelta(hours=1)


# --- helpers --------------------------------------------------------------------------------------


async def new_ticket(
    pool: asyncpg.Pool, customer_id: str = "acme", *, created_at: datetime = T0, subject: str = "Help"
) -> int:
    row = await saved_ticket(pool, customer_id, subject=subject, created_at=created_at)
    return row["id"]


async def claim(
    conn: asyncpg.Connection,
    ticket_id: int,
    *,
    language: str = "en",
    module: str = "billing",
    priority: Priority = Priority.P3,
    home_region: str | None = "emea",
    at: datetime = NOW,
    queued_since: datetime = NOW,
    preferred_agent_id: str | None = None,
) -> ClaimOutcome:
    return await claim_best_agent(
        conn,
        ticket_id=ticket_id,
        language=language,
        module=module,
        priority=priority,
        home_region=home_region,
        at=at,
        queued_since=queued_since,
        preferred_agent_id=preferred_agent_id,
    )


async def load_of(conn: asyncpg.Connection, agent_id: str) -> int:
    return await conn.fetchval("SELECT load FROM agents WHERE id = $1", agent_id)


async def claims_of(conn: asyncpg.Connection, agent_id: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM agent_claims WHERE agent_id = $1", agent_id)


async def queue_row(conn: asyncpg.Connection, ticket_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM ticket_queue WHERE ticket_id = $1", ticket_id)


async def count(conn: asyncpg.Connection, table: str) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM {table}")


# --- claim_best_agent -----------------------------------------------------------------------------


async def test_claim_best_agent_takes_least_loaded_and_counts_load(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "ana")
    await add_agent(db, "bea")
    first, second = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        await claim_agent(conn, ticket_id=first, agent_id="ana")
        outcome = await claim(conn, second)
        assert outcome.agent is not None
        assert outcome.agent.id == "bea"
        assert outcome.agent.region == "emea"
        assert not outcome.queued
        assert "load 0/5" in outcome.reason
        assert await load_of(conn, "ana") == 1
        assert await load_of(conn, "bea") == 1
        assert await conn.fetchval("SELECT agent_id FROM agent_claims WHERE ticket_id = $1", second) == "bea"
        assert await queue_row(conn, second) is None


async def test_claim_best_agent_is_idempotent(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "ana")
    await add_agent(db, "bea")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        first = await claim(conn, ticket)
        again = await claim(conn, ticket)
        assert first.agent is not None and again.agent is not None
        assert again.agent.id == first.agent.id
        assert "already claimed" in again.reason
        assert await load_of(conn, first.agent.id) == 1
        assert await count(conn, "agent_claims") == 1
        assert await conn.fetchval("SELECT sum(load) FROM agents") == 1


async def test_claim_best_agent_queues_when_nobody_fits(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "hans", languages={"de": LanguageLevel.NATIVE})
    await add_agent(db, "vid", skills={"video": 5})
    await add_agent(db, "weekend", shift=Shift(days=[6, 7], start=time(0), end=time(0)))
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        outcome = await claim(conn, ticket, priority=Priority.P2, queued_since=T0)
        assert outcome.agent is None
        assert outcome.queued
        assert "en" in outcome.reason and "billing" in outcome.reason
        row = await queue_row(conn, ticket)
        assert row is not None
        assert (row["language"], row["module"], row["priority"], row["home_region"]) == (
            "en",
            "billing",
            "P2",
            "emea",
        )
        assert row["queued_at"] == T0
        assert await count(conn, "agent_claims") == 0
        assert await conn.fetchval("SELECT sum(load) FROM agents") == 0

        # Queuing again only moves the priority; the ticket keeps its place in line.
        again = await claim(conn, ticket, priority=Priority.P1, queued_since=NOW)
        assert again.queued
        row = await queue_row(conn, ticket)
        assert row["priority"] == "P1"
        assert row["queued_at"] == T0
        assert await count(conn, "ticket_queue") == 1


async def test_claim_best_agent_queues_when_only_agent_is_full(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "solo", capacity=1)
    first, second = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        assert (await claim(conn, first)).agent.id == "solo"
        outcome = await claim(conn, second)
        assert outcome.queued and outcome.agent is None
        assert await load_of(conn, "solo") == 1


async def test_claim_best_agent_skips_inactive_agents(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "gone")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await directory.deactivate_agent(conn, "gone")
        outcome = await claim(conn, ticket)
        assert outcome.queued
        assert await load_of(conn, "gone") == 0


async def test_claim_best_agent_preferred_agent_wins_when_they_fit(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "idle")
    await add_agent(db, "known")
    warmup = [await new_ticket(db) for _ in range(2)]
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        for t in warmup:
            await claim_agent(conn, ticket_id=t, agent_id="known")
        outcome = await claim(conn, ticket, preferred_agent_id="known")
        assert outcome.agent.id == "known"
        assert await load_of(conn, "known") == 3
        assert await load_of(conn, "idle") == 0


async def test_claim_best_agent_preferred_agent_ignored_when_they_do_not_fit(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "idle")
    await add_agent(db, "full", capacity=1)
    await add_agent(db, "nobilling", skills={"video": 4})
    warmup, first, second = await new_ticket(db), await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        await claim_agent(conn, ticket_id=warmup, agent_id="full")
        assert (await claim(conn, first, preferred_agent_id="full")).agent.id == "idle"
        assert (await claim(conn, second, preferred_agent_id="nobilling")).agent.id == "idle"
        assert (await claim(conn, await new_ticket(db), preferred_agent_id="ghost")).agent.id == "idle"
        assert await load_of(conn, "full") == 1
        assert await load_of(conn, "nobilling") == 0


async def test_claim_best_agent_removes_queue_row_once_claimed(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        assert (await claim(conn, ticket)).queued
        await add_agent(db, "late")
        outcome = await claim(conn, ticket)
        assert outcome.agent.id == "late"
        assert await queue_row(conn, ticket) is None


# --- overbooking ----------------------------------------------------------------------------------


async def test_concurrent_claims_never_overbook(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "solo", capacity=3)
    ids = [await new_ticket(db) for _ in range(12)]

    async def one(ticket_id: int) -> ClaimOutcome:
        async with db.acquire() as conn:
            return await claim(conn, ticket_id)

    outcomes = await asyncio.gather(*(one(t) for t in ids))
    claimed = [o for o in outcomes if o.agent is not None]
    queued = [o for o in outcomes if o.queued]
    assert len(claimed) == 3
    assert len(queued) == 9
    assert all(o.agent.id == "solo" for o in claimed)
    async with db.acquire() as conn:
        assert await load_of(conn, "solo") == 3
        assert await claims_of(conn, "solo") == 3
        assert await count(conn, "ticket_queue") == 9


async def test_concurrent_manual_claims_never_overbook(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "solo", capacity=2)
    ids = [await new_ticket(db) for _ in range(6)]

    async def one(ticket_id: int):
        async with db.acquire() as conn:
            return await claim_agent(conn, ticket_id=ticket_id, agent_id="solo")

    results = await asyncio.gather(*(one(t) for t in ids), return_exceptions=True)
    assert sum(isinstance(r, tuple) for r in results) == 2
    assert sum(isinstance(r, AssignmentRefused) for r in results) == 4
    async with db.acquire() as conn:
        assert await load_of(conn, "solo") == 2
        assert await claims_of(conn, "solo") == 2


# --- claim_agent (manual) -------------------------------------------------------------------------


async def test_claim_agent_unknown_agent_refused(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        with pytest.raises(AssignmentRefused, match=r"unknown agent 'ghost'"):
            await claim_agent(conn, ticket_id=ticket, agent_id="ghost")
        assert await count(conn, "agent_claims") == 0


async def test_claim_agent_inactive_agent_refused(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "gone")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await directory.deactivate_agent(conn, "gone")
        with pytest.raises(AssignmentRefused, match=r"agent 'gone' is not active"):
            await claim_agent(conn, ticket_id=ticket, agent_id="gone")
        assert await load_of(conn, "gone") == 0


async def test_claim_agent_at_capacity_refused(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "busy", capacity=1)
    first, second = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        agent, freed = await claim_agent(conn, ticket_id=first, agent_id="busy")
        assert (agent.id, freed) == ("busy", False)
        with pytest.raises(AssignmentRefused, match=r"agent 'busy' is at capacity \(1/1\)"):
            await claim_agent(conn, ticket_id=second, agent_id="busy")
        assert await load_of(conn, "busy") == 1


async def test_claim_agent_same_agent_twice_counts_once(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "ana")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        agent, freed = await claim_agent(conn, ticket_id=ticket, agent_id="ana")
        assert (agent.id, agent.name, agent.region, freed) == ("ana", "Ana", "emea", False)
        agent, freed = await claim_agent(conn, ticket_id=ticket, agent_id="ana")
        assert (agent.id, freed) == ("ana", False)
        assert await load_of(conn, "ana") == 1


async def test_claim_agent_reassign_frees_previous_agent(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "ana")
    await add_agent(db, "bea", region="apac")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim_agent(conn, ticket_id=ticket, agent_id="ana")
        agent, freed = await claim_agent(conn, ticket_id=ticket, agent_id="bea")
        assert (agent.id, agent.region, freed) == ("bea", "apac", True)
        assert await load_of(conn, "ana") == 0
        assert await load_of(conn, "bea") == 1
        assert await conn.fetchval("SELECT agent_id FROM agent_claims WHERE ticket_id = $1", ticket) == "bea"


async def test_claim_agent_refused_reassignment_keeps_current_agent(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "ana")
    await add_agent(db, "full", capacity=1)
    ticket, other = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        await claim_agent(conn, ticket_id=ticket, agent_id="ana")
        await claim_agent(conn, ticket_id=other, agent_id="full")
        with pytest.raises(AssignmentRefused):
            await claim_agent(conn, ticket_id=ticket, agent_id="full")
        assert await load_of(conn, "ana") == 1
        assert await conn.fetchval("SELECT agent_id FROM agent_claims WHERE ticket_id = $1", ticket) == "ana"


async def test_claim_agent_takes_ticket_out_of_queue(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        assert (await claim(conn, ticket)).queued
        await add_agent(db, "ana", languages={"ja": LanguageLevel.NATIVE}, skills={"video": 1})
        # A manual assignment ignores language, skill and shift.
        agent, freed = await claim_agent(conn, ticket_id=ticket, agent_id="ana")
        assert (agent.id, freed) == ("ana", False)
        assert await queue_row(conn, ticket) is None


# --- release_agent --------------------------------------------------------------------------------


async def test_release_agent_frees_load_and_is_repeatable(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "ana")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim_agent(conn, ticket_id=ticket, agent_id="ana")
        assert await release_agent(conn, ticket) == "ana"
        assert await load_of(conn, "ana") == 0
        assert await count(conn, "agent_claims") == 0
        assert await release_agent(conn, ticket) is None
        assert await load_of(conn, "ana") == 0


async def test_release_agent_removes_queue_row(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        assert (await claim(conn, ticket)).queued
        assert await release_agent(conn, ticket) is None
        assert await queue_row(conn, ticket) is None
        assert await release_agent(conn, ticket) is None


async def test_release_then_claim_again(db: asyncpg.Pool):
    await add_customer(db, "acme")
    await add_agent(db, "solo", capacity=1)
    first, second = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, first)
        assert (await claim(conn, second)).queued
        await release_agent(conn, first)
        assert (await claim(conn, second)).agent.id == "solo"
        assert await load_of(conn, "solo") == 1


# --- dispatch_queue and offers --------------------------------------------------------------------


async def test_dispatch_queue_priority_before_age(db: asyncpg.Pool):
    await add_customer(db, "acme")
    p3_early, p1_late = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        assert (await claim(conn, p3_early, priority=Priority.P3, queued_since=T0)).queued
        assert (
            await claim(conn, p1_late, priority=Priority.P1, queued_since=T0 + timedelta(minutes=30))
        ).queued
        await add_agent(db, "solo", capacity=1)

        offers = await dispatch_queue(conn, NOW)
        assert [(o.ticket_id, o.agent.id) for o in offers] == [(p1_late, "solo")]
        assert await load_of(conn, "solo") == 1
        assert await queue_row(conn, p1_late) is None
        assert await queue_row(conn, p3_early) is not None
        assert (
            await conn.fetchval("SELECT agent_id FROM agent_claims WHERE ticket_id = $1", p1_late) == "solo"
        )
        row = await conn.fetchrow("SELECT * FROM assignment_offers")
        assert (str(row["offer_id"]), row["ticket_id"], row["agent_id"]) == (
            offers[0].offer_id,
            p1_late,
            "solo",
        )

        # Nobody has room now: a second dispatch does nothing.
        assert await dispatch_queue(conn, NOW) == []
        assert await load_of(conn, "solo") == 1


async def test_dispatch_queue_age_within_same_priority(db: asyncpg.Pool):
    await add_customer(db, "acme")
    newer, older = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, newer, priority=Priority.P2, queued_since=T0 + timedelta(minutes=5))
        await claim(conn, older, priority=Priority.P2, queued_since=T0)
        await add_agent(db, "solo", capacity=1)
        offers = await dispatch_queue(conn, NOW)
        assert [o.ticket_id for o in offers] == [older]


async def test_dispatch_queue_fills_capacity_and_skips_unservable(db: asyncpg.Pool):
    await add_customer(db, "acme")
    spanish = await new_ticket(db)
    english = [await new_ticket(db) for _ in range(3)]
    async with db.acquire() as conn:
        # The Spanish ticket is first in line, but nobody speaks Spanish: it must not block the rest.
        await claim(conn, spanish, language="es", priority=Priority.P1, queued_since=T0)
        for i, t in enumerate(english):
            await claim(conn, t, queued_since=T0 + timedelta(minutes=i))
        await add_agent(db, "ana", capacity=1)
        await add_agent(db, "bea", capacity=1)
        offers = await dispatch_queue(conn, NOW)
        assert [o.ticket_id for o in offers] == english[:2]
        assert sorted(o.agent.id for o in offers) == ["ana", "bea"]
        assert await load_of(conn, "ana") == 1
        assert await load_of(conn, "bea") == 1
        assert await queue_row(conn, spanish) is not None
        assert await queue_row(conn, english[2]) is not None
        assert await count(conn, "assignment_offers") == 2


async def test_dispatch_queue_respects_shifts(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, ticket)
        await add_agent(db, "night", shift=Shift(days=[1, 2, 3, 4, 5, 6, 7], start=time(22), end=time(6)))
        # 13:00 UTC is 13:00 in Dublin: the night agent is off shift.
        assert await dispatch_queue(conn, NOW) == []
        # 23:00 UTC is 23:00 in Dublin (winter).
        offers = await dispatch_queue(conn, datetime(2026, 1, 12, 23, 0, tzinfo=UTC))
        assert [o.agent.id for o in offers] == ["night"]


async def test_concurrent_dispatch_never_overbooks(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ids = [await new_ticket(db) for _ in range(8)]
    async with db.acquire() as conn:
        for i, t in enumerate(ids):
            await claim(conn, t, queued_since=T0 + timedelta(seconds=i))
    await add_agent(db, "solo", capacity=3)

    async def one():
        async with db.acquire() as conn:
            return await dispatch_queue(conn, NOW)

    results = await asyncio.gather(*(one() for _ in range(4)))
    offers = [o for r in results for o in r]
    assert len(offers) == 3
    assert len({o.ticket_id for o in offers}) == 3
    async with db.acquire() as conn:
        assert await load_of(conn, "solo") == 3
        assert await count(conn, "ticket_queue") == 5
        assert await count(conn, "assignment_offers") == 3


async def test_withdraw_offer_gives_slot_back(db: asyncpg.Pool):
    await add_customer(db, "acme")
    first, second = await new_ticket(db), await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, first, queued_since=T0)
        await claim(conn, second, queued_since=T0 + timedelta(minutes=1))
        await add_agent(db, "solo", capacity=1)
        [offer] = await dispatch_queue(conn, NOW)
        assert offer.ticket_id == first

        await withdraw_offer(conn, offer)
        assert await load_of(conn, "solo") == 0
        assert await count(conn, "agent_claims") == 0
        assert await count(conn, "assignment_offers") == 0
        # Withdrawing twice is harmless.
        await withdraw_offer(conn, offer)
        assert await load_of(conn, "solo") == 0

        [next_offer] = await dispatch_queue(conn, NOW)
        assert next_offer.ticket_id == second
        assert await load_of(conn, "solo") == 1


async def test_withdraw_offer_leaves_a_newer_claim_alone(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, ticket)
        await add_agent(db, "ana")
        await add_agent(db, "bea")
        [offer] = await dispatch_queue(conn, NOW)
        other = "bea" if offer.agent.id == "ana" else "ana"
        # Meanwhile the ticket was reassigned by hand.
        await claim_agent(conn, ticket_id=ticket, agent_id=other)
        await withdraw_offer(conn, offer)
        assert await load_of(conn, other) == 1
        assert await conn.fetchval("SELECT agent_id FROM agent_claims WHERE ticket_id = $1", ticket) == other
        assert await count(conn, "assignment_offers") == 0


async def test_stale_offers_and_forget(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, ticket)
        await add_agent(db, "ana")
        [offer] = await dispatch_queue(conn, NOW)
        await asyncio.sleep(0.01)
        stale = await stale_offers(conn, 0)
        assert stale == [offer]
        assert await stale_offers(conn, 3600) == []
        await forget_offer(conn, offer.offer_id)
        assert await stale_offers(conn, 0) == []
        # Forgetting the offer does not release the agent: the ticket keeps them.
        assert await load_of(conn, "ana") == 1


# --- apply_projection -----------------------------------------------------------------------------


def snapshot(ticket_id: int, revision: int, **changes) -> TicketSnapshot:
    values = dict(
        ticket_id=ticket_id,
        revision=revision,
        status=TicketStatus.OPEN,
        subject="Help",
        customer_id="acme",
        channel="api",
        language="en",
        language_confidence=0.97,
        module="billing",
        priority=Priority.P3,
        region="emea",
        assignee_id="ana",
        created_at=T0,
        updated_at=T0 + timedelta(minutes=revision),
        first_response_at=None,
        resolved_at=None,
        closed_at=None,
        reopen_count=0,
        sla=[
            SlaView(
                target=SlaTarget.FIRST_RESPONSE,
                state=SlaClockState.RUNNING,
                due_at=T0 + timedelta(hours=4),
                target_minutes=240,
                elapsed_minutes=revision,
            )
        ],
        sla_state=SlaClockState.RUNNING,
        csat_score=None,
        csat_comment=None,
    )
    values.update(changes)
    return TicketSnapshot(**values)


def event(seq: int, kind: str = "note", **data) -> TimelineEvent:
    return TimelineEvent(
        seq=seq,
        at=T0 + timedelta(minutes=seq),
        kind=kind,
        actor=Actor.system("emea"),
        region="emea",
        internal=False,
        data=data,
    )


async def test_apply_projection_writes_snapshot(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        applied = await tickets.apply_projection(
            conn,
            ProjectionBatch(snapshot=snapshot(ticket, 1), events=[event(2, "triaged", module="billing")]),
        )
        assert applied is True
        row = await tickets.get_ticket(conn, ticket)
        assert row["revision"] == 1
        assert row["status"] == "open"
        assert row["priority"] == "P3"
        assert row["assignee_id"] == "ana"
        assert row["language_confidence"] == pytest.approx(0.97)
        assert row["sla"][0]["target"] == "first_response"
        assert row["sla_state"] == "running"
        timeline = await tickets.timeline(conn, ticket, include_internal=True)
        assert [(e.seq, e.kind) for e in timeline] == [(1, "created"), (2, "triaged")]
        assert timeline[1].data == {"module": "billing"}


async def test_apply_projection_older_or_equal_revision_never_overwrites(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        newer = snapshot(ticket, 5, status=TicketStatus.RESOLVED, priority=Priority.P1)
        assert await tickets.apply_projection(conn, ProjectionBatch(snapshot=newer, events=[]))
        older = snapshot(ticket, 4, status=TicketStatus.OPEN, priority=Priority.P4)
        assert await tickets.apply_projection(conn, ProjectionBatch(snapshot=older, events=[])) is False
        same = snapshot(ticket, 5, status=TicketStatus.PENDING_CUSTOMER, priority=Priority.P2)
        assert await tickets.apply_projection(conn, ProjectionBatch(snapshot=same, events=[])) is False
        row = await tickets.get_ticket(conn, ticket)
        assert (row["revision"], row["status"], row["priority"]) == (5, "resolved", "P1")
        assert await tickets.apply_projection(
            conn, ProjectionBatch(snapshot=snapshot(ticket, 6, status=TicketStatus.CLOSED), events=[])
        )
        assert (await tickets.get_ticket(conn, ticket))["status"] == "closed"


async def test_apply_projection_inserts_events_once(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    batch = ProjectionBatch(snapshot=snapshot(ticket, 1), events=[event(2, text="a"), event(3, text="b")])
    async with db.acquire() as conn:
        assert await tickets.apply_projection(conn, batch)
        assert await tickets.apply_projection(conn, batch) is False
        # A replay with different content for the same seq does not rewrite history either.
        altered = ProjectionBatch(snapshot=snapshot(ticket, 1), events=[event(3, text="CHANGED")])
        await tickets.apply_projection(conn, altered)
        rows = await conn.fetch(
            "SELECT seq, data FROM ticket_events WHERE ticket_id = $1 ORDER BY seq", ticket
        )
        assert [r["seq"] for r in rows] == [1, 2, 3]
        assert rows[2]["data"] == {"text": "b"}


async def test_apply_projection_event_data_with_datetimes(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        batch = ProjectionBatch(snapshot=snapshot(ticket, 1), events=[event(2, due=T0)])
        assert await tickets.apply_projection(conn, batch)
        data = await conn.fetchval("SELECT data FROM ticket_events WHERE ticket_id = $1 AND seq = 2", ticket)
        assert datetime.fromisoformat(data["due"]) == T0


async def test_apply_projection_updates_queue_priority(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, ticket, priority=Priority.P3)
        await tickets.apply_projection(
            conn, ProjectionBatch(snapshot=snapshot(ticket, 1, priority=Priority.P1), events=[])
        )
        assert (await queue_row(conn, ticket))["priority"] == "P1"


async def test_apply_projection_stale_revision_does_not_touch_queue(db: asyncpg.Pool):
    """BUG: `apply_projection` updates `ticket_queue.priority` even when the snapshot is stale.

    The UPDATE of `tickets` is guarded by `revision < $2`, but the following
    `UPDATE ticket_queue SET priority` runs unconditionally, so a replayed or late older revision
    puts the queued ticket back at its old priority while `tickets` keeps the new one.
    """
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        await claim(conn, ticket, priority=Priority.P3)
        newer = ProjectionBatch(snapshot=snapshot(ticket, 2, priority=Priority.P1), events=[])
        older = ProjectionBatch(snapshot=snapshot(ticket, 1, priority=Priority.P3), events=[])
        assert await tickets.apply_projection(conn, newer)
        assert await tickets.apply_projection(conn, older) is False
        assert (await tickets.get_ticket(conn, ticket))["priority"] == "P1"
        assert (await queue_row(conn, ticket))["priority"] == "P1"


async def test_ticket_events_are_append_only(db: asyncpg.Pool):
    await add_customer(db, "acme")
    ticket = await new_ticket(db)
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE ticket_events SET kind = 'tampered' WHERE ticket_id = $1", ticket)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM ticket_events WHERE ticket_id = $1", ticket)
        assert await conn.fetchval("SELECT kind FROM ticket_events WHERE ticket_id = $1", ticket) == "created"


# --- list_tickets ---------------------------------------------------------------------------------


async def project(conn: asyncpg.Connection, ticket_id: int, **changes) -> None:
    applied = await tickets.apply_projection(
        conn, ProjectionBatch(snapshot=snapshot(ticket_id, 1, **changes), events=[])
    )
    assert applied


async def seed_list(db: asyncpg.Pool) -> dict[str, int]:
    """Tickets of every priority and none, created at different times; returns name → id."""
    await add_customer(db, "acme")
    await add_customer(db, "globex", region="apac")
    spec = [
        # name, customer, minutes after T0, projection (None: never triaged)
        ("p3_old", "acme", 0, dict(priority=Priority.P3)),
        ("untriaged_old", "acme", 1, None),
        ("p1_new", "globex", 50, dict(priority=Priority.P1, region="apac", language="ja", assignee_id="kei")),
        ("p4", "acme", 2, dict(priority=Priority.P4, status=TicketStatus.PENDING_CUSTOMER)),
        ("p1_old", "acme", 10, dict(priority=Priority.P1)),
        ("p2", "globex", 5, dict(priority=Priority.P2, region="apac", assignee_id=None)),
        ("untriaged_new", "globex", 40, None),
        ("p3_new", "acme", 30, dict(priority=Priority.P3, status=TicketStatus.RESOLVED)),
        ("p3_same_time", "globex", 30, dict(priority=Priority.P3, language="es")),
    ]
    ids: dict[str, int] = {}
    async with db.acquire() as conn:
        for name, customer, after, changes in spec:
            ids[name] = await new_ticket(db, customer, created_at=T0 + timedelta(minutes=after), subject=name)
            if changes is not None:
                await project(conn, ids[name], customer_id=customer, **changes)
    return ids


EXPECTED_ORDER = [
    "p1_old",
    "p1_new",
    "p2",
    "p3_old",
    "p3_new",
    "p3_same_time",  # same created_at as p3_new, higher id
    "p4",
    "untriaged_old",
    "untriaged_new",
]


async def test_list_tickets_orders_by_priority_then_age_null_last(db: asyncpg.Pool):
    ids = await seed_list(db)
    names = {v: k for k, v in ids.items()}
    async with db.acquire() as conn:
        rows, cursor = await tickets.list_tickets(conn, tickets.TicketFilters(), limit=50, cursor=None)
    assert [names[r["id"]] for r in rows] == EXPECTED_ORDER
    assert cursor is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (tickets.TicketFilters(priority=Priority.P3), ["p3_old", "p3_new", "p3_same_time"]),
        (tickets.TicketFilters(region="apac"), ["p1_new", "p2"]),
        (tickets.TicketFilters(status=TicketStatus.NEW), ["untriaged_old", "untriaged_new"]),
        (tickets.TicketFilters(status=TicketStatus.RESOLVED), ["p3_new"]),
        (tickets.TicketFilters(assignee_id="kei"), ["p1_new"]),
        (tickets.TicketFilters(language="es"), ["p3_same_time"]),
        (
            tickets.TicketFilters(customer_id="globex"),
            ["p1_new", "p2", "p3_same_time", "untriaged_new"],
        ),
        (tickets.TicketFilters(customer_id="acme", status=TicketStatus.OPEN), ["p1_old", "p3_old"]),
        (tickets.TicketFilters(priority=Priority.P1, region="emea"), ["p1_old"]),
        (tickets.TicketFilters(customer_id="nobody"), []),
    ],
)
async def test_list_tickets_filters(db: asyncpg.Pool, filters: tickets.TicketFilters, expected: list[str]):
    ids = await seed_list(db)
    names = {v: k for k, v in ids.items()}
    async with db.acquire() as conn:
        rows, cursor = await tickets.list_tickets(conn, filters, limit=50, cursor=None)
    assert [names[r["id"]] for r in rows] == expected
    assert cursor is None


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 8, 9, 10])
async def test_list_tickets_cursor_pagination_returns_each_ticket_once(db: asyncpg.Pool, limit: int):
    ids = await seed_list(db)
    names = {v: k for k, v in ids.items()}
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    async with db.acquire() as conn:
        while True:
            rows, cursor = await tickets.list_tickets(
                conn, tickets.TicketFilters(), limit=limit, cursor=cursor
            )
            pages += 1
            assert len(rows) <= limit
            seen += [names[r["id"]] for r in rows]
            if cursor is None:
                break
            assert len(rows) == limit
            assert pages < 20
    assert seen == EXPECTED_ORDER
    assert pages == -(-len(EXPECTED_ORDER) // limit)


async def test_list_tickets_cursor_pagination_with_filter(db: asyncpg.Pool):
    ids = await seed_list(db)
    names = {v: k for k, v in ids.items()}
    filters = tickets.TicketFilters(customer_id="acme")
    seen: list[str] = []
    cursor: str | None = None
    async with db.acquire() as conn:
        while True:
            rows, cursor = await tickets.list_tickets(conn, filters, limit=2, cursor=cursor)
            seen += [names[r["id"]] for r in rows]
            if cursor is None:
                break
    assert seen == ["p1_old", "p3_old", "p3_new", "p4", "untriaged_old"]


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!!",
        "",
        base64.urlsafe_b64encode(b"not json").decode(),
        _b64(5),
        _b64({"priority": "P1"}),
        _b64(["P1", "2026-03-09T12:00:00+00:00"]),
        _b64(["P1", "yesterday", 3]),
        _b64(["P1", 12, 3]),
        _b64(["P1", "2026-03-09T12:00:00+00:00", "three"]),
    ],
)
async def test_list_tickets_garbage_cursor_raises_value_error(db: asyncpg.Pool, cursor: str):
    async with db.acquire() as conn:
        with pytest.raises(ValueError):
            await tickets.list_tickets(conn, tickets.TicketFilters(), limit=10, cursor=cursor)


async def test_list_tickets_cursor_with_out_of_range_id_raises_value_error(db: asyncpg.Pool):
    """BUG: `decode_cursor` accepts any int, so a tampered cursor with an id beyond bigint reaches
    PostgreSQL and fails with asyncpg.DataError instead of ValueError; the API only turns
    ValueError into a 400, so this cursor is a 500."""
    cursor = _b64(["P1", "2026-03-09T12:00:00+00:00", 10**30])
    async with db.acquire() as conn:
        with pytest.raises(ValueError):
            await tickets.list_tickets(conn, tickets.TicketFilters(), limit=10, cursor=cursor)
