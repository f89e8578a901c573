"""SLA clocks in business time: the customer's contract calendar decides which minutes count."""

from __future__ import annotations

import asyncio
from datetime import time, timedelta

from db import calendars, directory
from domain.calendars import BusinessCalendar, OpeningHours
from domain.directory import CustomerFields
from domain.enums import ActorType, CustomerTier, TicketStatus
from domain.tickets import Actor, CustomerMessage, StatusChange
from tests import test_ticket_workflow
from tests.conftest import add_agent
from tests.test_ticket_workflow import agent_actor, close_to, reply
from workflows.ticket import TicketWorkflow

desk = test_ticket_workflow.desk  # the time-skipping server with a worker

NEW_YORK_OFFICE = BusinessCalendar(
    id="ny-office",
    name="NY office",
    timezone="America/New_York",
    holiday_country="US",
    hours=[OpeningHours(day=d, start=time(9), end=time(17)) for d in range(1, 6)],
)
# One hour a week: budgets of hours last for months, past the 45 days a workflow is given at once.
MONDAY_HOUR = BusinessCalendar(
    id="monday-hour",
    name="Mondays 09-10",
    timezone="Europe/Dublin",
    hours=[OpeningHours(day=1, start=time(9), end=time(10))],
)


async def customer_on(pool, customer_id: str, calendar: BusinessCalendar, tier: CustomerTier) -> None:
    async with pool.acquire() as conn:
        await calendars.save_calendar(conn, calendar)
        await directory.upsert_customer(
            conn,
            customer_id,
            CustomerFields(
                name=customer_id.title(), tier=tier, language="en", region_id="emea", calendar_id=calendar.id
            ),
        )


async def test_first_response_is_due_after_business_minutes_of_the_customers_calendar(desk):
    await customer_on(desk.pool, "office", NEW_YORK_OFFICE, CustomerTier.BUSINESS)  # P3: 240 business minutes
    handle, ticket_id, created = await desk.open(customer="office")
    state = await desk.state(handle)
    assert state.sla_calendar is not None and state.sla_calendar.calendar_id == "ny-office"
    first = state.clocks["first_response"]
    expected_due = NEW_YORK_OFFICE.add_business_time(created, timedelta(minutes=240))
    expected_warning = NEW_YORK_OFFICE.add_business_time(created, timedelta(minutes=180))
    assert close_to(first.due_at(state.sla_calendar), expected_due)

    await desk.skip(handle, expected_warning - created - timedelta(seconds=30))
    assert await desk.events(ticket_id, "sla_warning") == []
    await desk.skip(handle, timedelta(minutes=1))
    warnings = await desk.events(ticket_id, "sla_warning")
    assert [w.data["target"] for w in warnings] == ["first_response"]
    assert close_to(warnings[0].at, expected_warning)

    now = await desk.env.get_current_time()
    await desk.skip(handle, expected_due - now + timedelta(minutes=1))
    breach = [b for b in await desk.events(ticket_id, "sla_breached") if b.data["target"] == "first_response"]
    assert close_to(breach[0].at, expected_due)


async def test_enterprise_clocks_run_around_the_clock_whatever_the_contract_calendar(desk):
    await customer_on(
        desk.pool, "bigco", NEW_YORK_OFFICE, CustomerTier.ENTERPRISE
    )  # policy calendar: 'always'
    handle, _, created = await desk.open(customer="bigco")
    state = await desk.state(handle)
    assert state.sla_calendar is None
    assert close_to(state.clocks["first_response"].due_at(), created + timedelta(minutes=60))


async def test_windows_are_fetched_again_before_they_run_out(desk):
    await customer_on(desk.pool, "slow", MONDAY_HOUR, CustomerTier.STANDARD)  # P4: 480 business minutes
    handle, ticket_id, created = await desk.open(customer="slow", subject="Question", body="How do I export?")
    first_horizon = (await desk.state(handle)).sla_calendar.end
    expected_due = MONDAY_HOUR.add_business_time(created, timedelta(minutes=480))  # eight Mondays away
    assert expected_due - created > timedelta(days=49)

    await desk.skip(handle, expected_due - created + timedelta(minutes=1))
    state = await desk.state(handle)
    assert state.sla_calendar.end > first_horizon
    breach = [b for b in await desk.events(ticket_id, "sla_breached") if b.data["target"] == "first_response"]
    assert close_to(breach[0].at, expected_due)


async def test_next_response_and_periodic_update_follow_the_conversation(desk):
    await add_agent(desk.pool, "alice")
    handle, ticket_id, created = await desk.open()  # acme: enterprise, P2: next response 120, update 240 min
    await handle.execute_update(TicketWorkflow.reply, reply("alice", reply_id="first"))
    state = await desk.state(handle)
    assert "next_response" not in state.clocks
    assert state.clocks["periodic_update"].is_running

    await desk.skip(handle, timedelta(minutes=30))
    await handle.signal(
        TicketWorkflow.customer_message,
        CustomerMessage(
            message_id="q2", body="And what about the API?", actor=Actor(type=ActorType.CUSTOMER, id="acme")
        ),
    )
    state = await desk.until(handle, lambda s: "next_response" in s.clocks)
    asked_at = state.clocks["next_response"].running_since
    assert close_to(state.clocks["next_response"].due_at(), asked_at + timedelta(minutes=120))

    await desk.skip(handle, timedelta(minutes=100))
    await handle.execute_update(TicketWorkflow.reply, reply("alice", reply_id="second"))
    state = await desk.state(handle)
    assert state.clocks["next_response"].is_stopped
    period = state.clocks["periodic_update"]
    assert period.consumed == timedelta(0) and not period.warning_sent  # a fresh update period

    _, actor = agent_actor("alice")
    await handle.execute_update(
        TicketWorkflow.set_status, StatusChange(status=TicketStatus.PENDING_CUSTOMER, actor=actor)
    )
    await desk.skip(handle, timedelta(hours=10))
    targets = [e.data["target"] for e in await desk.events(ticket_id, "sla_breached")]
    assert "periodic_update" not in targets and "next_response" not in targets


async def test_a_new_contract_calendar_recomputes_running_clocks_through_the_api(api):
    from datetime import datetime

    calendar = NEW_YORK_OFFICE.model_dump(mode="json") | {"id": "ny-office-api"}
    assert (await api.http.post("/v1/calendars", json=calendar, headers=api.admin)).status_code == 201
    customer = {"id": "office", "name": "Office", "tier": "business", "language": "en", "region_id": "emea"}
    assert (await api.http.post("/v1/customers", json=customer, headers=api.admin)).status_code == 201
    response = await api.http.post(
        "/v1/tickets",
        json={"customer_id": "office", "subject": "Invoice", "body": "wrong total"},
        headers=api.admin,
    )
    ticket = await api.wait_for(response.json()["id"], lambda t: t["priority"] is not None)
    created = datetime.fromisoformat(ticket["created_at"])
    assert datetime.fromisoformat(ticket["sla"]["first_response"]["due_at"]) == created + timedelta(
        minutes=240
    )

    changed = await api.http.put(
        "/v1/customers/office", json=customer | {"calendar_id": "ny-office-api"}, headers=api.admin
    )
    assert changed.status_code == 200, changed.text
    events = []
    for _ in range(100):
        events = [e for e in await api.timeline(ticket["id"]) if e["kind"] == "sla_recomputed"]
        if events:
            break
        await asyncio.sleep(0.1)
    assert events and events[0]["data"]["calendar_id"] == "ny-office-api"
    at = datetime.fromisoformat(events[0]["at"])
    office = BusinessCalendar(**calendar)
    expected = office.add_business_time(at, timedelta(minutes=240) - (at - created))
    ticket = await api.wait_for(
        ticket["id"],
        lambda t: t["sla"]["first_response"]["due_at"] != ticket["sla"]["first_response"]["due_at"],
    )
    assert abs(datetime.fromisoformat(ticket["sla"]["first_response"]["due_at"]) - expected) < timedelta(
        seconds=2
    )
