"""Escalation chains on the time-skipping server: levels fire at their delays until acknowledged."""

from __future__ import annotations

from datetime import timedelta

from db import directory
from domain.directory import Region
from domain.enums import ActorType, CustomerTier
from domain.tickets import Actor, AssignRequest, EscalationAck, ResolveRequest
from tests import test_ticket_workflow
from tests.conftest import add_agent, add_customer
from tests.test_ticket_workflow import agent_actor, close_to, reply
from workflows.ticket import TicketWorkflow

desk = test_ticket_workflow.desk  # the time-skipping server with a worker
OUTAGE = {"subject": "Production down", "body": "Outage for all users since 09:00"}  # enterprise -> P1


async def staff(pool, agent_id: str, roles: list[str], region: str = "emea") -> None:
    await add_agent(pool, agent_id, region=region, capacity=1)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE agents SET roles = $2, email = $3 WHERE id = $1",
            agent_id,
            roles,
            f"{agent_id}@example.com",
        )


async def pages(desk, ticket_id: int) -> list[tuple[str, str | None]]:
    async with desk.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT kind, recipient_id FROM notifications WHERE ticket_id = $1 AND kind LIKE 'page:%'
               ORDER BY created_at""",
            ticket_id,
        )
    return [(r["kind"], r["recipient_id"]) for r in rows]


async def fill(desk, agent_id: str) -> None:
    """Give an agent a full load so routing passes them by (leads and managers are not on the queue)."""
    async with desk.pool.acquire() as conn:
        await conn.execute("UPDATE agents SET load = capacity WHERE id = $1", agent_id)


async def test_a_p1_breach_climbs_the_chain_until_someone_acknowledges(desk):
    await staff(desk.pool, "lina", ["lead"])
    await staff(desk.pool, "max", ["manager"])
    await staff(desk.pool, "sre", ["sre"], region="apac")
    for agent in ("lina", "max", "sre"):
        await fill(desk, agent)
    handle, ticket_id, created = await desk.open(**OUTAGE)  # queued: nobody has room
    assert (await desk.state(handle)).priority == "P1"

    await desk.skip(handle, timedelta(minutes=16))  # first response (15 min) breached: level 1
    escalated = await desk.events(ticket_id, "escalated")
    assert [e.data["level"] for e in escalated] == [1]
    assert close_to(escalated[0].at, created + timedelta(minutes=15))
    assert escalated[0].data["paged"] == ["lina"]
    assert set(await pages(desk, ticket_id)) >= {
        ("page:webhook:trigger", "lina"),
        ("page:slack:trigger", None),
    }

    await desk.skip(handle, timedelta(minutes=15))  # +15 min: the regional manager, by email and Slack
    escalated = await desk.events(ticket_id, "escalated")
    assert [e.data["level"] for e in escalated] == [1, 2] and escalated[1].data["paged"] == ["max"]
    assert ("page:email:trigger", "max") in await pages(desk, ticket_id)

    await desk.skip(handle, timedelta(minutes=15))  # +30 min: SRE on-call through PagerDuty
    assert [e.data["level"] for e in await desk.events(ticket_id, "escalated")] == [1, 2, 3]
    assert ("page:pagerduty:trigger", None) in await pages(desk, ticket_id)

    chain = await handle.execute_update(
        TicketWorkflow.acknowledge_escalation,
        EscalationAck(actor=Actor(type=ActorType.AGENT, id="sre"), note="on it"),
    )
    assert chain.acknowledged_by == "sre"
    await desk.skip(handle, timedelta(hours=1))  # the level-3 repeats never come
    assert [e.data["level"] for e in await desk.events(ticket_id, "escalated")] == [1, 2, 3]
    assert ("page:pagerduty:acknowledge", None) in await pages(desk, ticket_id)

    await handle.execute_update(
        TicketWorkflow.resolve, ResolveRequest(actor=Actor(type=ActorType.AGENT, id="sre"))
    )
    await desk.until(handle, lambda s: not s.pending_events)
    assert ("page:pagerduty:resolve", None) in await pages(desk, ticket_id)


async def test_low_priority_never_pages_anyone_in_their_local_night(desk):
    await add_customer(desk.pool, "small", tier=CustomerTier.STANDARD)  # P4: first response 480 min
    now = await desk.env.get_current_time()
    breach = now + timedelta(minutes=480)
    offset = (3 - breach.hour) % 24  # a zone where the breach falls at about 03:00 local
    zone = f"Etc/GMT-{offset}" if offset <= 14 else f"Etc/GMT+{24 - offset}"
    async with desk.pool.acquire() as conn:  # EMEA moves to a zone where the breach falls at night
        await directory.upsert_region(conn, Region(id="emea", name="EMEA", timezone=zone))
    await add_agent(desk.pool, "owl", region="emea")
    handle, ticket_id, _ = await desk.open(customer="small", subject="Question", body="How do I export?")
    assert (await desk.state(handle)).assignee.id == "owl"

    await desk.skip(handle, timedelta(minutes=481))
    escalated = await desk.events(ticket_id, "escalated")
    assert escalated[0].data["paged"] == [] and escalated[0].data["quiet_hours"] == ["owl"]
    assert await pages(desk, ticket_id) == []


async def test_a_late_answer_ends_the_chain_and_resolves_the_incident(desk):
    await staff(desk.pool, "sre", ["sre"], region="apac")
    await fill(desk, "sre")
    await add_agent(desk.pool, "alice", region="emea")
    await fill(desk, "alice")
    handle, ticket_id, _ = await desk.open(**OUTAGE)  # queued: everyone is full
    await desk.skip(handle, timedelta(minutes=46))  # breach at 15, levels 1-3 by 45
    assert [e.data["level"] for e in await desk.events(ticket_id, "escalated")] == [1, 2, 3]

    async with desk.pool.acquire() as conn:
        await conn.execute("UPDATE agents SET load = 0 WHERE id = 'alice'")
    _, actor = agent_actor("alice")
    await handle.execute_update(TicketWorkflow.assign, AssignRequest(agent_id="alice", actor=actor))
    await handle.execute_update(TicketWorkflow.reply, reply("alice", reply_id="late"))
    await desk.skip(handle, timedelta(minutes=1))
    resolved = await desk.events(ticket_id, "escalation_resolved")
    assert [e.data["trigger"] for e in resolved] == ["first_response"]
    # The level-3 repeats (due 60 and 75 minutes after the breach) do not come. (A periodic-update
    # breach an hour after this reply would start a new chain: that is a new breach.)
    await desk.skip(handle, timedelta(minutes=50))
    assert [e.data["level"] for e in await desk.events(ticket_id, "escalated")] == [1, 2, 3]
    assert ("page:pagerduty:resolve", None) in await pages(desk, ticket_id)
