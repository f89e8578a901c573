"""A shift that ends a minute after the test starts: the handoff happens in real time, through the API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest_asyncio

from tests.conftest import make_settings, open_api
from tests.test_api import agent_body, file_ticket, make_customer

NO_WEEKLY_SHIFT = {"days": [], "start": "09:00", "end": "17:00"}


@pytest_asyncio.fixture(loop_scope="session")
async def desk_api(db, dev_env, shared_deps, database_url):
    # Hand off 55 s before the shift ends, so a shift ending in a minute hands off within seconds.
    settings = make_settings(
        database_url, handoff_lead=timedelta(seconds=55), handoff_ack_timeout=timedelta(minutes=5)
    )
    async with open_api(db, dev_env, shared_deps, settings) as api:
        yield api


async def test_the_shift_ends_and_the_ticket_moves_to_the_next_region_through_the_api(desk_api):
    api = desk_api
    response = await api.http.post(
        "/v1/agents", json={**agent_body("alice", region="emea"), "shift": NO_WEEKLY_SHIFT}, headers=api.admin
    )
    alice = api.as_token(response.json()["token"])
    response = await api.http.post("/v1/agents", json=agent_body("kenji", region="apac"), headers=api.admin)
    kenji = api.as_token(response.json()["token"])
    now = datetime.now(UTC)
    override = {
        "kind": "extra",
        "starts_at": (now - timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(minutes=1)).isoformat(),
        "reason": "covering the morning",
    }
    response = await api.http.post("/v1/agents/alice/overrides", json=override, headers=api.admin)
    assert response.status_code == 201, response.text

    customer = await make_customer(api, "acme")
    ticket = await file_ticket(api, customer, subject="Refund", body="Please refund the invoice")
    ticket = await api.wait_for(ticket["id"], lambda t: t["status"] == "open")
    assert ticket["assignee_id"] == "alice" and ticket["region"] == "emea"
    response = await api.http.post(
        f"/v1/tickets/{ticket['id']}/handoff-note",
        headers=alice,
        json={
            "what_was_tried": "Checked the payment gateway",
            "next_action": "Issue the refund",
            "promised_update": "Refund confirmation today",
        },
    )
    assert response.status_code == 200, response.text

    moved = await api.wait_for(ticket["id"], lambda t: t["assignee_id"] == "kenji", patience=30)
    assert moved["region"] == "apac"
    events = await api.timeline(ticket["id"])
    handed = next(e for e in events if e["kind"] == "handed_off")
    assert handed["data"]["what_was_tried"] == "Checked the payment gateway"
    assert handed["data"]["to_agent_id"] == "kenji"
    customer_view = [e["kind"] for e in await api.timeline(ticket["id"], headers=api.as_token(customer))]
    assert "team_changed" in customer_view and "handed_off" not in customer_view

    wrong = await api.http.post(f"/v1/tickets/{ticket['id']}/handoff/ack", json={}, headers=alice)
    assert wrong.status_code == 403 and "kenji" in wrong.text
    ack = await api.http.post(f"/v1/tickets/{ticket['id']}/handoff/ack", json={}, headers=kenji)
    assert ack.status_code == 200 and ack.json()["acknowledged_at"] is not None
    await asyncio.sleep(0.2)
    assert (
        await api.http.post(f"/v1/tickets/{ticket['id']}/handoff/ack", json={}, headers=kenji)
    ).status_code == 409
    reply = await api.http.post(
        f"/v1/tickets/{ticket['id']}/replies", json={"body": "Refund issued"}, headers=kenji
    )
    assert reply.status_code == 201
