"""The ticket workflow on the time-skipping server: days of SLA and survey time in seconds.

Activities are real and write to the real PostgreSQL; only time is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from db import tickets
from domain.enums import ActorType, CustomerTier, Priority, TicketStatus
from domain.sla import SlaTarget
from domain.tickets import (
    Actor,
    AgentRef,
    AgentReply,
    AssignRequest,
    CsatAnswer,
    CustomerMessage,
    PriorityChange,
    ReopenRequest,
    ResolveRequest,
    StatusChange,
    TicketInput,
    TicketState,
)
from meridian.temporal import start_ticket_workflow
from tests.conftest import add_agent, add_customer, make_settings, running_worker, saved_ticket
from workflows.ticket import TicketWorkflow

SECOND = timedelta(seconds=1)


class Desk:
    def __init__(self, env, pool, settings):
        self.env = env
        self.pool = pool
        self.settings = settings
        self.handles: list[WorkflowHandle] = []

    async def open(
        self,
        customer: str = "acme",
        subject: str = "Invoice is wrong",
        body: str = "Please fix",
        declared: Priority | None = None,
    ) -> tuple[WorkflowHandle, int, datetime]:
        created_at = await self.env.get_current_time()
        row = await saved_ticket(
            self.pool,
            customer,
            subject=subject,
            body=body,
            created_at=created_at,
            actor=Actor(type=ActorType.CUSTOMER, id=customer),
            declared_priority=declared,
        )
        handle = await start_ticket_workflow(
            self.env.client,
            self.settings.task_queue,
            TicketInput(
                ticket_id=row["id"],
                customer_id=customer,
                subject=subject,
                body=body,
                declared_priority=declared,
                created_at=created_at,
                lifecycle=self.settings.lifecycle(),
            ),
        )
        self.handles.append(handle)
        await self.until(handle, lambda s: s.status is not TicketStatus.NEW)
        return handle, row["id"], created_at

    async def terminate_all(self) -> None:
        """Left running, a test's tickets would hold the shared server's clock still for the next test."""
        for handle in self.handles:
            with contextlib.suppress(RPCError):
                await handle.terminate("test finished")

    async def state(self, handle: WorkflowHandle) -> TicketState:
        return await handle.query(TicketWorkflow.state)

    async def until(self, handle: WorkflowHandle, predicate, patience: float = 15) -> TicketState:
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            state = await self.state(handle)
            if predicate(state) and not state.pending_events:
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"workflow never reached the expected state: {state}")
            await asyncio.sleep(0.05)

    async def skip(self, handle: WorkflowHandle, duration: timedelta) -> TicketState:
        await self.env.sleep(duration)
        return await self.until(handle, lambda s: True)

    async def events(self, ticket_id: int, kind: str | None = None) -> list:
        async with self.pool.acquire() as conn:
            found = await tickets.timeline(conn, ticket_id, include_internal=True)
        return [e for e in found if kind is None or e.kind == kind]


@pytest_asyncio.fixture(loop_scope="session")
async def desk(db, skipping_env, shared_deps, database_url):
    settings = make_settings(database_url)
    await add_customer(db, "acme", tier=CustomerTier.ENTERPRISE)  # baseline P2: first response 60 min
    desk = Desk(skipping_env, db, settings)
    async with running_worker(skipping_env.client, shared_deps, settings):
        try:
            yield desk
        finally:
            await desk.terminate_all()


def agent_actor(agent_id: str) -> tuple[AgentRef, Actor]:
    return (
        AgentRef(id=agent_id, name=agent_id.title(), region="emea"),
        Actor(type=ActorType.AGENT, id=agent_id, region="emea"),
    )


def reply(
    agent_id: str, body: str = "Looking into it", internal: bool = False, reply_id: str = "r1"
) -> AgentReply:
    agent, actor = agent_actor(agent_id)
    return AgentReply(reply_id=reply_id, agent=agent, body=body, internal=internal, actor=actor)


def close_to(actual: datetime, expected: datetime) -> bool:
    return abs(actual - expected) <= 2 * SECOND


async def test_first_response_warning_and_breach_fire_at_their_thresholds(desk):
    handle, ticket_id, created = await desk.open()  # nobody to assign: queued
    state = await desk.state(handle)
    assert state.status is TicketStatus.QUEUED and state.priority is Priority.P2

    await desk.skip(handle, timedelta(minutes=44))
    assert await desk.events(ticket_id, "sla_warning") == []

    await desk.skip(handle, timedelta(minutes=2))
    warnings = await desk.events(ticket_id, "sla_warning")
    assert [w.data["target"] for w in warnings] == ["first_response"]
    assert close_to(warnings[0].at, created + timedelta(minutes=45))

    await desk.skip(handle, timedelta(minutes=15))
    breaches = await desk.events(ticket_id, "sla_breached")
    assert [b.data["target"] for b in breaches] == ["first_response"]
    assert close_to(breaches[0].at, created + timedelta(minutes=60))
    async with desk.pool.acquire() as conn:
        row = await tickets.get_ticket(conn, ticket_id)
        kinds = [
            r["kind"]
            for r in await conn.fetch("SELECT kind FROM notifications WHERE ticket_id = $1", ticket_id)
        ]
    assert row["sla_state"] == "breached"
    assert {"sla_warning", "sla_breached"} <= set(kinds)

    # The resolution clock (480 min for P2) warns at 75 % and breaches at 100 %, exactly once each.
    await desk.skip(handle, timedelta(minutes=480))
    targets = [(e.kind, e.data["target"]) for e in await desk.events(ticket_id) if e.kind.startswith("sla_")]
    assert targets == [
        ("sla_warning", "first_response"),
        ("sla_breached", "first_response"),
        ("sla_warning", "resolution"),
        ("sla_breached", "resolution"),
    ]
    resolution_breach = [
        e for e in await desk.events(ticket_id, "sla_breached") if e.data["target"] == "resolution"
    ]
    assert close_to(resolution_breach[0].at, created + timedelta(minutes=480))


async def test_agent_reply_stops_the_first_response_clock(desk):
    await add_agent(desk.pool, "alice")
    handle, ticket_id, created = await desk.open()
    state = await desk.state(handle)
    assert state.assignee.id == "alice" and state.status is TicketStatus.OPEN

    await desk.skip(handle, timedelta(minutes=10))
    note = await handle.execute_update(
        TicketWorkflow.reply, reply("alice", "internal only", internal=True, reply_id="n")
    )
    assert note.first_response is False
    accepted = await handle.execute_update(TicketWorkflow.reply, reply("alice"))
    assert accepted.first_response is True

    await desk.skip(handle, timedelta(minutes=120))
    state = await desk.state(handle)
    assert state.clocks["first_response"].is_stopped
    assert [e.data["target"] for e in await desk.events(ticket_id, "sla_breached")] == []
    async with desk.pool.acquire() as conn:
        row = await tickets.get_ticket(conn, ticket_id)
    assert row["first_response_at"] is not None
    assert {v["target"]: v["state"] for v in row["sla"]} == {
        "first_response": "met",
        "resolution": "running",
        "periodic_update": "running",  # P2 promises updates
    }


async def test_pending_customer_pauses_resolution_and_a_customer_message_resumes_it(desk):
    await add_agent(desk.pool, "alice")
    handle, ticket_id, created = await desk.open()
    await handle.execute_update(TicketWorkflow.reply, reply("alice"))
    due_before = (await desk.state(handle)).clocks["resolution"].due_at()

    await desk.skip(handle, timedelta(minutes=30))
    _, actor = agent_actor("alice")
    await handle.execute_update(
        TicketWorkflow.set_status,
        StatusChange(status=TicketStatus.PENDING_CUSTOMER, reason="need logs", actor=actor),
    )
    await desk.skip(handle, timedelta(hours=20))  # longer than the whole 8 h resolution budget
    assert await desk.events(ticket_id, "sla_breached") == []
    assert (await desk.state(handle)).clocks["resolution"].due_at() is None

    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(
            message_id="m1", body="here are the logs", actor=Actor(type=ActorType.CUSTOMER, id="acme")
        ),
    )
    state = await desk.until(handle, lambda s: s.status is TicketStatus.OPEN)
    moved = state.clocks["resolution"].due_at() - due_before
    assert abs(moved - timedelta(hours=20)) < timedelta(seconds=5)
    kinds = [e.kind for e in await desk.events(ticket_id)]
    assert kinds[-2:] == ["customer_message", "status_changed"]


async def test_raising_the_priority_moves_the_deadlines(desk):
    await add_customer(desk.pool, "small", tier=CustomerTier.STANDARD)  # P4: first response 480 min
    handle, ticket_id, created = await desk.open(
        customer="small", subject="Question", body="How do I export?"
    )
    state = await desk.state(handle)
    assert state.priority is Priority.P4
    await desk.skip(handle, timedelta(minutes=20))
    _, actor = agent_actor("lead")
    views = await handle.execute_update(
        TicketWorkflow.change_priority,
        PriorityChange(priority=Priority.P1, reason="CEO escalated", actor=actor),
    )
    first = next(v for v in views if v.target == "first_response")
    assert close_to(first.due_at, created + timedelta(minutes=15))
    # 20 minutes already used of a 15-minute budget: the breach fires at once.
    await desk.until(handle, lambda s: s.clocks["first_response"].breach_sent)
    assert [e.data["target"] for e in await desk.events(ticket_id, "sla_breached")] == ["first_response"]
    changed = await desk.events(ticket_id, "priority_changed")
    assert changed[0].data == {"from": "P4", "to": "P1", "reason": "CEO escalated"}


async def test_survey_is_sent_reminded_once_expires_and_the_ticket_closes(desk):
    await add_agent(desk.pool, "alice")
    handle, ticket_id, created = await desk.open()
    _, actor = agent_actor("alice")
    await handle.execute_update(TicketWorkflow.resolve, ResolveRequest(resolution="fixed", actor=actor))
    resolved_at = (await desk.state(handle)).resolved_at

    await desk.skip(handle, timedelta(minutes=61))
    assert len(await desk.events(ticket_id, "csat_sent")) == 1
    await desk.skip(handle, timedelta(hours=24))
    reminders = await desk.events(ticket_id, "csat_reminder")
    assert len(reminders) == 1 and close_to(reminders[0].at, resolved_at + timedelta(hours=25))

    outcome = await handle.result()  # lets the server skip to the end
    assert outcome.status is TicketStatus.CLOSED and outcome.csat_score is None
    expired = await desk.events(ticket_id, "csat_expired")
    assert close_to(expired[0].at, resolved_at + timedelta(hours=73))
    kinds = [e.kind for e in await desk.events(ticket_id)]
    assert kinds.count("csat_reminder") == 1 and kinds[-1] == "closed"
    async with desk.pool.acquire() as conn:
        row = await tickets.get_ticket(conn, ticket_id)
        agent_load = await conn.fetchval("SELECT load FROM agents WHERE id = 'alice'")
    assert row["status"] == "closed" and row["closed_at"] is not None
    assert agent_load == 0


async def test_an_answered_survey_closes_when_the_reopen_window_ends(desk):
    await add_agent(desk.pool, "alice")
    handle, ticket_id, _ = await desk.open()
    _, actor = agent_actor("alice")
    await handle.execute_update(TicketWorkflow.resolve, ResolveRequest(actor=actor))
    resolved_at = (await desk.state(handle)).resolved_at
    customer = Actor(type=ActorType.CUSTOMER, id="acme")
    survey = await handle.execute_update(
        TicketWorkflow.submit_csat, CsatAnswer(score=4, comment="ok", actor=customer)
    )
    assert survey.score == 4
    with pytest.raises(WorkflowUpdateFailedError) as again:
        await handle.execute_update(TicketWorkflow.submit_csat, CsatAnswer(score=5, actor=customer))
    assert again.value.cause.type == "InvalidState"

    outcome = await handle.result()
    assert outcome.status is TicketStatus.CLOSED and outcome.csat_score == 4
    closed = await desk.events(ticket_id, "closed")
    assert close_to(closed[0].at, resolved_at + desk.settings.reopen_window)
    assert await desk.events(ticket_id, "csat_sent") == []  # answered before it was due


async def test_a_customer_message_in_the_reopen_window_reopens_with_the_same_engineer(desk):
    await add_agent(desk.pool, "alice")
    await add_agent(desk.pool, "bob")
    handle, ticket_id, _ = await desk.open()
    owner = (await desk.state(handle)).assignee.id
    await handle.execute_update(TicketWorkflow.reply, reply(owner))
    first_response_at = (await desk.state(handle)).first_response_at
    _, actor = agent_actor(owner)
    await handle.execute_update(TicketWorkflow.resolve, ResolveRequest(actor=actor))

    await desk.skip(handle, timedelta(hours=2))
    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(
            message_id="again", body="It broke again", actor=Actor(type=ActorType.CUSTOMER, id="acme")
        ),
    )
    state = await desk.until(handle, lambda s: s.status is TicketStatus.OPEN)
    assert state.assignee.id == owner
    assert state.reopen_count == 1 and state.first_response_at == first_response_at
    assert not state.clocks["resolution"].is_stopped
    kinds = [e.kind for e in await desk.events(ticket_id)]
    assert kinds[-3:] == ["customer_message", "reopened", "assigned"]

    # Reopening by hand is refused once the window has passed after a second resolution.
    await handle.execute_update(TicketWorkflow.resolve, ResolveRequest(actor=actor))
    await desk.skip(handle, timedelta(hours=2))
    await handle.execute_update(
        TicketWorkflow.reopen_ticket, ReopenRequest(reason="still broken", actor=actor)
    )
    assert (await desk.state(handle)).reopen_count == 2


async def test_a_queued_ticket_gets_the_agent_the_moment_capacity_frees(desk):
    await add_agent(desk.pool, "alice", capacity=1)
    first, first_id, _ = await desk.open(subject="First", body="invoice")
    second, second_id, _ = await desk.open(subject="Second", body="invoice")
    assert (await desk.state(first)).assignee.id == "alice"
    assert (await desk.state(second)).status is TicketStatus.QUEUED

    _, actor = agent_actor("alice")
    await first.execute_update(TicketWorkflow.resolve, ResolveRequest(actor=actor))
    state = await desk.until(second, lambda s: s.status is TicketStatus.OPEN)
    assert state.assignee.id == "alice"
    assigned = await desk.events(second_id, "assigned")
    assert assigned[0].data["reason"].startswith("capacity freed")
    async with desk.pool.acquire() as conn:
        assert await conn.fetchval("SELECT load FROM agents WHERE id = 'alice'") == 1
        assert await conn.fetchval("SELECT count(*) FROM ticket_queue") == 0
        assert await conn.fetchval("SELECT count(*) FROM assignment_offers") == 0


async def update_refusal(call) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as failure:
        await call
    assert isinstance(failure.value.cause, ApplicationError)
    return failure.value.cause


async def test_updates_that_the_ticket_state_forbids_are_refused_with_a_reason(desk):
    await add_agent(desk.pool, "alice", capacity=1)
    await add_agent(desk.pool, "bob", capacity=1)
    handle, ticket_id, _ = await desk.open()
    owner = (await desk.state(handle)).assignee.id
    other = "bob" if owner == "alice" else "alice"

    refusal = await update_refusal(handle.execute_update(TicketWorkflow.reply, reply(other)))
    assert refusal.type == "NotAssignee" and owner in refusal.message

    customer = Actor(type=ActorType.CUSTOMER, id="acme")
    refusal = await update_refusal(
        handle.execute_update(TicketWorkflow.submit_csat, CsatAnswer(score=5, actor=customer))
    )
    assert refusal.type == "InvalidState"
    refusal = await update_refusal(
        handle.execute_update(TicketWorkflow.reopen_ticket, ReopenRequest(actor=customer))
    )
    assert refusal.type == "InvalidState"
    _, actor = agent_actor(owner)
    refusal = await update_refusal(
        handle.execute_update(TicketWorkflow.set_status, StatusChange(status=TicketStatus.OPEN, actor=actor))
    )
    assert "already open" in refusal.message

    # The other agent is full: manual assignment is refused by the database claim.
    blocker, _, _ = await desk.open(subject="blocker", body="invoice")
    assert (await desk.state(blocker)).assignee.id == other
    refusal = await update_refusal(
        handle.execute_update(TicketWorkflow.assign, AssignRequest(agent_id=other, actor=actor))
    )
    assert refusal.type == "AgentUnavailable" and "capacity" in refusal.message

    await handle.execute_update(TicketWorkflow.resolve, ResolveRequest(actor=actor))
    refusal = await update_refusal(handle.execute_update(TicketWorkflow.resolve, ResolveRequest(actor=actor)))
    assert refusal.type == "InvalidState" and "resolved" in refusal.message
    refusal = await update_refusal(handle.execute_update(TicketWorkflow.reply, reply(owner, reply_id="late")))
    assert refusal.type == "InvalidState"


async def test_a_met_target_stays_met_when_the_priority_rises(desk):
    await add_agent(desk.pool, "alice")
    await add_customer(desk.pool, "small", tier=CustomerTier.STANDARD)  # P4: first response 480 min
    handle, ticket_id, _ = await desk.open(customer="small", subject="Question", body="How do I export?")
    await desk.skip(handle, timedelta(minutes=30))
    await handle.execute_update(TicketWorkflow.reply, reply("alice"))
    _, actor = agent_actor("alice")
    views = await handle.execute_update(
        TicketWorkflow.change_priority, PriorityChange(priority=Priority.P1, actor=actor)
    )
    assert {v.target: v.state for v in views}["first_response"] == "met"
    assert await desk.events(ticket_id, "sla_breached") == []


async def test_a_message_after_the_reopen_window_is_kept_and_someone_is_told(desk):
    await add_agent(desk.pool, "alice")
    handle, ticket_id, _ = await desk.open()
    _, actor = agent_actor("alice")
    await handle.execute_update(TicketWorkflow.resolve, ResolveRequest(actor=actor))
    await desk.skip(handle, timedelta(minutes=61))  # survey sent, not answered; window is 3 days
    # The window ended at 72 h; the unanswered survey keeps the ticket resolved until 73 h.
    await desk.skip(handle, timedelta(days=3) - timedelta(minutes=30))
    state = await desk.state(handle)
    assert state.status is TicketStatus.RESOLVED
    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(
            message_id="late", body="one more thing", actor=Actor(type=ActorType.CUSTOMER, id="acme")
        ),
    )
    state = await desk.until(handle, lambda s: "late" in s.recent_message_ids)
    assert state.status is TicketStatus.RESOLVED
    # Nobody owes a timed answer to a ticket that stays resolved: no next-response clock runs.
    next_response = state.clocks.get(SlaTarget.NEXT_RESPONSE)
    assert next_response is None or not next_response.is_running
    async with desk.pool.acquire() as conn:
        rows = await conn.fetch("SELECT kind FROM notifications WHERE ticket_id = $1", ticket_id)
    kinds = [r["kind"] for r in rows]
    assert "late_customer_message" in kinds
    await desk.skip(handle, timedelta(days=1))
    assert [e.kind for e in await desk.events(ticket_id) if e.kind == "reopened"] == []
    clocks = [e for e in await desk.events(ticket_id) if e.kind in ("sla_warning", "sla_breached")]
    assert [e for e in clocks if e.data.get("target") == "next_response"] == []


async def test_a_warning_at_each_configured_threshold(db, skipping_env, shared_deps, database_url):
    settings = make_settings(database_url, sla_warning_ratios=[0.5, 0.75, 0.9])
    await add_customer(db, "acme", tier=CustomerTier.ENTERPRISE)  # P2: first response 60 min
    desk = Desk(skipping_env, db, settings)
    async with running_worker(skipping_env.client, shared_deps, settings):
        try:
            handle, ticket_id, created = await desk.open()
            await desk.skip(handle, timedelta(minutes=61))
            warnings = [
                w for w in await desk.events(ticket_id, "sla_warning") if w.data["target"] == "first_response"
            ]
            assert [w.data["threshold_percent"] for w in warnings] == [50, 75, 90]
            for warning, minutes in zip(warnings, (30, 45, 54), strict=True):
                assert close_to(warning.at, created + timedelta(minutes=minutes))
            state = await desk.state(handle)
            assert state.clocks["first_response"].warnings_sent == 3
        finally:
            await desk.terminate_all()
