"""Shift-end handoff on the time-skipping server: the ticket moves before the shift ends."""

from __future__ import annotations

from datetime import time, timedelta

from db import rosters
from domain.enums import ActorType, LanguageLevel, TicketStatus
from domain.rosters import OverrideKind, RosterOverrideFields, Shift
from domain.tickets import Actor, CustomerMessage, HandoffAck, HandoffNote, HandoffNoteInput
from tests import test_ticket_workflow
from tests.conftest import add_agent
from tests.test_ticket_workflow import agent_actor
from workflows.ticket import TicketWorkflow

NO_WEEKLY_SHIFT = Shift(days=[], start=time(9), end=time(17))
desk = test_ticket_workflow.desk  # the same fixture: a worker on the time-skipping server


async def cover(pool, agent_id: str, kind: OverrideKind, start, end) -> None:
    async with pool.acquire() as conn:
        await rosters.add_override(
            conn, agent_id, RosterOverrideFields(kind=kind, starts_at=start, ends_at=end)
        )


async def alice_until(desk, hours: float) -> None:
    """Alice (EMEA, the customer's home region) is on shift from an hour ago for `hours` more."""
    now = await desk.env.get_current_time()
    await add_agent(desk.pool, "alice", region="emea", shift=NO_WEEKLY_SHIFT)
    await cover(
        desk.pool, "alice", OverrideKind.EXTRA, now - timedelta(hours=1), now + timedelta(hours=hours)
    )


async def notifications(desk, ticket_id: int) -> list:
    async with desk.pool.acquire() as conn:
        return await conn.fetch(
            "SELECT * FROM notifications WHERE ticket_id = $1 ORDER BY created_at", ticket_id
        )


async def test_the_ticket_moves_to_the_next_region_with_a_note_before_the_shift_ends(desk):
    await alice_until(desk, 2)
    await add_agent(desk.pool, "bob", region="apac")  # on shift around the clock
    handle, ticket_id, created = await desk.open()
    state = await desk.state(handle)
    assert state.assignee.id == "alice"
    assert abs(state.assignee.shift_ends_at - (created + timedelta(hours=2))) < timedelta(seconds=5)

    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(
            message_id="m1",
            body="Logs attached: error 503 at 09:14",
            actor=Actor(type=ActorType.CUSTOMER, id="acme"),
        ),
    )
    alice, alice_actor = agent_actor("alice")
    await handle.execute_update(
        TicketWorkflow.write_handoff_note,
        HandoffNoteInput(
            agent=alice,
            actor=alice_actor,
            note=HandoffNote(
                what_was_tried="Restarted the gateway",
                next_action="Read the 09:14 logs",
                promised_update="An update by 10:00 their time",
            ),
        ),
    )

    await desk.skip(handle, timedelta(hours=1, minutes=40))
    assert await desk.events(ticket_id, "handed_off") == []
    await desk.skip(handle, timedelta(minutes=10))  # the handoff is due 15 minutes before 2 h

    handed = await desk.events(ticket_id, "handed_off")
    assert len(handed) == 1
    note = handed[0].data
    assert (note["from_agent_id"], note["to_agent_id"], note["to_region"]) == ("alice", "bob", "apac")
    assert note["what_was_tried"] == "Restarted the gateway"
    assert note["next_action"] == "Read the 09:14 logs"
    assert note["promised_update"] == "An update by 10:00 their time"
    assert note["last_customer_message"] == "Logs attached: error 503 at 09:14"
    assert set(note["sla_due"]) == {"first_response", "resolution"} and note["status"] == "open"
    assert abs(handed[0].at - (created + timedelta(hours=1, minutes=45))) < timedelta(seconds=5)
    team = await desk.events(ticket_id, "team_changed")
    assert team[0].internal is False and team[0].data["message"] == "Your ticket is now with our APAC team."

    state = await desk.state(handle)
    assert state.assignee.id == "bob" and state.region == "apac" and state.handoff.to_agent_id == "bob"
    assert any(
        n["kind"] == "handoff" and n["recipient_id"] == "bob" for n in await notifications(desk, ticket_id)
    )
    async with desk.pool.acquire() as conn:
        loads = dict(await conn.fetch("SELECT id, load FROM agents ORDER BY id"))
    assert loads == {"alice": 0, "bob": 1}

    bob, bob_actor = agent_actor("bob")
    acked = await handle.execute_update(
        TicketWorkflow.acknowledge_handoff, HandoffAck(agent=bob, actor=bob_actor)
    )
    assert acked.acknowledged_at is not None
    await desk.skip(handle, timedelta(minutes=30))
    assert await desk.events(ticket_id, "handoff_unacknowledged") == []


async def test_an_unacknowledged_handoff_escalates_once(desk):
    await alice_until(desk, 1)
    await add_agent(desk.pool, "bob", region="apac")
    handle, ticket_id, _ = await desk.open()
    await desk.skip(handle, timedelta(minutes=50))  # handed off at 45 min; acknowledgement due at 60
    assert len(await desk.events(ticket_id, "handed_off")) == 1
    await desk.skip(handle, timedelta(minutes=9))
    assert await desk.events(ticket_id, "handoff_unacknowledged") == []
    await desk.skip(handle, timedelta(minutes=2))
    escalated = await desk.events(ticket_id, "handoff_unacknowledged")
    assert [e.data["to_agent_id"] for e in escalated] == ["bob"]
    await desk.skip(handle, timedelta(hours=2))
    assert len(await desk.events(ticket_id, "handoff_unacknowledged")) == 1
    kinds = [n["kind"] for n in await notifications(desk, ticket_id)]
    assert kinds.count("handoff_unacknowledged") == 1


async def test_with_nobody_to_take_it_the_ticket_is_queued_and_the_gap_reported(desk):
    await alice_until(desk, 1)
    handle, ticket_id, _ = await desk.open()
    await desk.skip(handle, timedelta(minutes=50))
    state = await desk.state(handle)
    assert state.status is TicketStatus.QUEUED and state.assignee is None
    handed = await desk.events(ticket_id, "handed_off")
    assert handed[0].data["to_agent_id"] is None and handed[0].data["routing"].startswith("coverage gap")
    assert any(n["kind"] == "coverage_gap" for n in await notifications(desk, ticket_id))
    async with desk.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_queue WHERE ticket_id = $1", ticket_id) == 1
        assert await conn.fetchval("SELECT load FROM agents WHERE id = 'alice'") == 0


async def test_an_agent_going_off_shift_early_hands_over_at_once(desk):
    await add_agent(desk.pool, "alice", region="emea")  # around the clock, until she falls ill
    await add_agent(desk.pool, "bob", region="apac")
    handle, ticket_id, _ = await desk.open()
    assert (await desk.state(handle)).assignee.id == "alice"
    now = await desk.env.get_current_time()
    await cover(desk.pool, "alice", OverrideKind.OFF, now - timedelta(minutes=1), now + timedelta(hours=8))
    await handle.signal(TicketWorkflow.roster_changed)
    state = await desk.until(handle, lambda s: s.assignee is not None and s.assignee.id == "bob")
    assert state.handoff.from_agent_id == "alice"
    assert "shift of Alice ends" in (await desk.events(ticket_id, "handed_off"))[0].data["reason"]


async def test_the_customer_reads_the_team_change_in_their_own_language(desk):
    now = await desk.env.get_current_time()
    japanese = {"ja": LanguageLevel.NATIVE, "en": LanguageLevel.FLUENT}
    await add_agent(desk.pool, "alice", region="emea", languages=japanese, shift=NO_WEEKLY_SHIFT)
    await cover(desk.pool, "alice", OverrideKind.EXTRA, now - timedelta(hours=1), now + timedelta(hours=1))
    await add_agent(desk.pool, "bob", region="apac", languages=japanese)
    handle, ticket_id, _ = await desk.open(
        subject="請求書が間違っています", body="先月の請求書の金額が正しくありません。確認してください。"
    )
    assert (await desk.state(handle)).language == "ja"
    await desk.skip(handle, timedelta(minutes=50))
    (team,) = await desk.events(ticket_id, "team_changed")
    assert team.internal is False
    assert team.data == {
        "region": "apac",
        "message": "お問い合わせは現在、APACチームが担当しています。",
        "language": "ja",
    }
