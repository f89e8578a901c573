"""Routing as a ticket waits: native speakers first, then fluent ones, then machine translation."""

from __future__ import annotations

from datetime import timedelta

from db import tickets
from domain.enums import CustomerTier, LanguageLevel, TicketStatus
from domain.tickets import AssignRequest
from tests import test_ticket_workflow
from tests.conftest import add_agent, add_customer
from tests.test_ticket_workflow import agent_actor
from workflows.ticket import TicketWorkflow

desk = test_ticket_workflow.desk  # the time-skipping server with a worker
SPANISH = {
    "subject": "No puedo descargar la factura",
    "body": "La factura de octubre no se descarga del portal.",
}


async def test_a_fluent_speaker_takes_it_when_no_native_one_comes_within_the_wait(desk):
    await add_customer(desk.pool, "globex", tier=CustomerTier.BUSINESS, language="es")
    await add_agent(desk.pool, "fluent", languages={"es": LanguageLevel.FLUENT, "en": LanguageLevel.NATIVE})
    handle, ticket_id, _ = await desk.open(customer="globex", **SPANISH)
    state = await desk.state(handle)
    assert state.status is TicketStatus.QUEUED and state.language_match == "native"

    await desk.skip(handle, timedelta(minutes=4))
    assert (await desk.state(handle)).status is TicketStatus.QUEUED
    await desk.skip(handle, timedelta(minutes=2))
    state = await desk.state(handle)
    assert state.assignee.id == "fluent" and not state.machine_translation
    widened = await desk.events(ticket_id, "routing_widened")
    assert [e.data["match"] for e in widened] == ["fluent"]


async def test_with_no_speaker_at_all_a_skilled_agent_takes_it_with_machine_translation(desk):
    await add_customer(desk.pool, "globex", tier=CustomerTier.BUSINESS, language="es")
    await add_agent(desk.pool, "english", languages={"en": LanguageLevel.NATIVE})
    handle, ticket_id, _ = await desk.open(customer="globex", **SPANISH)
    await desk.skip(handle, timedelta(minutes=14))
    assert (await desk.state(handle)).status is TicketStatus.QUEUED
    await desk.skip(handle, timedelta(minutes=2))
    state = await desk.state(handle)
    assert state.assignee.id == "english" and state.machine_translation
    assert [e.data["match"] for e in await desk.events(ticket_id, "routing_widened")] == ["fluent", "any"]
    assigned = await desk.events(ticket_id, "assigned")
    assert assigned[-1].data["machine_translation"] is True
    async with desk.pool.acquire() as conn:
        assert (await tickets.get_ticket(conn, ticket_id))["machine_translation"] is True


async def test_a_native_speaker_on_shift_takes_it_at_once(desk):
    await add_customer(desk.pool, "globex", tier=CustomerTier.BUSINESS, language="es")
    await add_agent(desk.pool, "fluent", languages={"es": LanguageLevel.FLUENT})
    await add_agent(desk.pool, "native", languages={"es": LanguageLevel.NATIVE})
    handle, ticket_id, _ = await desk.open(customer="globex", **SPANISH)
    state = await desk.state(handle)
    assert state.assignee.id == "native" and await desk.events(ticket_id, "routing_widened") == []


async def test_the_engineer_who_handled_the_customer_last_time_is_preferred(desk):
    await add_agent(desk.pool, "alice")
    await add_agent(desk.pool, "bob")
    first, _, _ = await desk.open()
    assert (await desk.state(first)).assignee.id == "alice"
    _, actor = agent_actor("alice")
    await first.execute_update(TicketWorkflow.assign, AssignRequest(agent_id="bob", actor=actor))

    second, second_id, _ = await desk.open(subject="Another question", body="invoice again")
    assert (await desk.state(second)).assignee.id == "bob"  # though alice has no tickets at all
    assigned = await desk.events(second_id, "assigned")
    assert "handled this customer before" in assigned[0].data["reason"]
