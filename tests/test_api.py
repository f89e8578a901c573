"""End to end through the HTTP API, on the Temporal dev server and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from domain.enums import ActorType
from domain.tickets import Actor, ticket_workflow_id
from tests.conftest import ALWAYS, saved_ticket
from workflows.housekeeping import HousekeepingWorkflow
from workflows.ticket import TicketWorkflow

HISTORIES = Path(__file__).parent / "histories"


def agent_body(
    agent_id: str, *, languages=None, skills=None, capacity: int = 5, region: str = "emea"
) -> dict:
    return {
        "id": agent_id,
        "name": agent_id.title(),
        "region_id": region,
        "languages": languages or [{"code": "en", "level": "native"}],
        "skills": skills or {"general": 3, "billing": 4, "api": 3},
        "capacity": capacity,
        "shift": ALWAYS.model_dump(mode="json"),
    }


async def make_agent(api, agent_id: str, **kwargs) -> str:
    response = await api.http.post("/v1/agents", json=agent_body(agent_id, **kwargs), headers=api.admin)
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def make_customer(api, customer_id: str, tier: str = "business", language: str = "en") -> str:
    response = await api.http.post(
        "/v1/customers",
        json={
            "id": customer_id,
            "name": customer_id.title(),
            "tier": tier,
            "language": language,
            "region_id": "emea",
        },
        headers=api.admin,
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def file_ticket(
    api, token: str, subject: str = "Invoice is wrong", body: str = "The invoice total is wrong", **extra
) -> dict:
    response = await api.http.post(
        "/v1/tickets", json={"subject": subject, "body": body, **extra}, headers=api.as_token(token)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def replay_and_maybe_record(api, ticket_id: int, name: str) -> None:
    """Replays the ticket's runs with today's code; MERIDIAN_RECORD_HISTORIES=1 also saves them for CI."""
    async for execution in api.client.list_workflows(f'WorkflowId="{ticket_workflow_id(ticket_id)}"'):
        if execution.status is WorkflowExecutionStatus.RUNNING:
            continue  # a run still at work may end mid-task, which a replayer waits on forever
        history = await api.client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        await Replayer(workflows=[TicketWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            history
        )
        if os.environ.get("MERIDIAN_RECORD_HISTORIES"):
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / f"{name}-{execution.run_id}.json").write_text(history.to_json())


async def test_a_ticket_lives_its_whole_life_through_the_api(api):
    spanish = [{"code": "es", "level": "native"}, {"code": "en", "level": "fluent"}]
    agent_token = await make_agent(api, "alice", languages=spanish)
    customer_token = await make_customer(api, "globex", language="es")
    customer = api.as_token(customer_token)
    agent = api.as_token(agent_token)

    ticket = await file_ticket(
        api,
        customer_token,
        subject="No puedo descargar la factura",
        body="Hola, la factura de octubre no se descarga. ¿Pueden ayudarme?",
    )
    assert ticket["status"] == "new" and ticket["customer_id"] == "globex"
    ticket_id = ticket["id"]

    ticket = await api.wait_for(ticket_id, lambda t: t["status"] == "open")
    assert (ticket["language"], ticket["module"], ticket["priority"]) == ("es", "billing", "P3")
    assert ticket["assignee_id"] == "alice" and ticket["region"] == "emea"
    assert ticket["sla"]["first_response"]["state"] == "running"
    due = datetime.fromisoformat(ticket["sla"]["first_response"]["due_at"])
    assert abs(due - (datetime.fromisoformat(ticket["created_at"]) + timedelta(minutes=240))) < timedelta(
        seconds=1
    )

    response = await api.http.post(
        f"/v1/tickets/{ticket_id}/messages", json={"body": "Es urgente"}, headers=customer
    )
    assert response.status_code == 202, response.text
    response = await api.http.post(
        f"/v1/tickets/{ticket_id}/replies",
        json={"body": "Customer is on the October plan", "internal": True},
        headers=agent,
    )
    assert response.status_code == 201 and response.json()["first_response"] is False
    response = await api.http.post(
        f"/v1/tickets/{ticket_id}/replies", json={"body": "Hola, ya está disponible."}, headers=agent
    )
    assert response.status_code == 201 and response.json()["first_response"] is True

    response = await api.http.post(
        f"/v1/tickets/{ticket_id}/resolve", json={"resolution": "Regenerated the PDF"}, headers=agent
    )
    assert response.status_code == 200 and response.json()["status"] == "resolved", response.text
    assert response.json()["sla"]["first_response"]["state"] == "met"

    response = await api.http.post(
        f"/v1/tickets/{ticket_id}/csat", json={"score": 5, "comment": "¡Gracias!"}, headers=customer
    )
    assert response.status_code == 200 and response.json()["csat_score"] == 5, response.text

    ticket = await api.wait_for(ticket_id, lambda t: t["status"] == "closed")
    assert ticket["closed_at"] is not None and ticket["csat_comment"] == "¡Gracias!"

    staff_view = [e["kind"] for e in await api.timeline(ticket_id)]
    assert staff_view == [
        "created",
        "triaged",
        "assigned",
        "customer_message",
        "internal_note",
        "agent_reply",
        "resolved",
        "csat_received",
        "closed",
    ]
    events = await api.timeline(ticket_id, headers=customer)
    assert [e["kind"] for e in events] == [
        "created",
        "customer_message",
        "agent_reply",
        "resolved",
        "csat_received",
        "closed",
    ]
    assert [e["seq"] for e in await api.timeline(ticket_id)] == list(range(1, 10))
    reply = next(e for e in events if e["kind"] == "agent_reply")
    assert reply["actor"] == {"type": "agent", "id": "alice", "name": "Alice", "region": "emea"}
    assert reply["region"] == "emea"

    handle = api.client.get_workflow_handle(ticket_workflow_id(ticket_id))
    # `closed` is projected before the run settles its last deliveries and returns: wait for it.
    await asyncio.wait_for(handle.result(), 20)
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED
    await replay_and_maybe_record(api, ticket_id, "lifecycle")


async def test_search_attributes_let_an_sre_find_tickets_in_temporal(api):
    await make_agent(api, "alice")
    token = await make_customer(api, "acme", tier="enterprise")
    ticket = await file_ticket(api, token, subject="Production down", body="Outage for all users since 09:00")
    await api.wait_for(ticket["id"], lambda t: t["status"] == "open")
    query = (
        f'WorkflowId="{ticket_workflow_id(ticket["id"])}" AND TicketStatus="open" AND TicketPriority="P1" '
        'AND TicketRegion="emea" AND TicketAssignee="alice" AND TicketLanguage="en" '
        'AND TicketSlaState="running"'
    )
    for _ in range(50):
        found = [w.id async for w in api.client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [ticket_workflow_id(ticket["id"])]


async def update_events(api, ticket_id: int) -> int:
    """Updates recorded in the ticket's history (its activities may add other events meanwhile)."""
    history = await api.client.get_workflow_handle(ticket_workflow_id(ticket_id)).fetch_history()
    return sum(1 for e in history.events if "UPDATE" in EventType.Name(e.event_type))


async def test_bad_requests_get_a_clear_4xx(api):
    alice = api.as_token(await make_agent(api, "alice", capacity=1))
    bob = api.as_token(await make_agent(api, "bob", capacity=1))
    acme = await make_customer(api, "acme")
    other = api.as_token(await make_customer(api, "other"))
    ticket = await file_ticket(api, acme)
    ticket = await api.wait_for(ticket["id"], lambda t: t["assignee_id"] is not None)
    owner, stranger = (alice, bob) if ticket["assignee_id"] == "alice" else (bob, alice)
    tid = ticket["id"]

    assert (await api.http.get("/v1/tickets")).status_code == 401
    assert (await api.http.get("/v1/tickets", headers=api.as_token("nope"))).status_code == 401
    assert (await api.http.get(f"/v1/tickets/{tid}", headers=other)).status_code == 404
    assert (await api.http.get("/v1/tickets/999999", headers=api.admin)).status_code == 404
    assert (await api.http.post(f"/v1/tickets/{tid}/resolve", json={}, headers=other)).status_code == 403
    assert (await api.http.post("/v1/regions", json={"id": "x"}, headers=alice)).status_code == 403

    response = await api.http.post(
        "/v1/tickets", json={"subject": "", "body": "x"}, headers=api.as_token(acme)
    )
    assert response.status_code == 422
    response = await api.http.post(
        "/v1/tickets", json={"subject": "s", "body": "b", "customer_id": "ghost"}, headers=api.admin
    )
    assert response.status_code == 422 and "ghost" in response.text
    response = await api.http.post("/v1/tickets", json={"subject": "s", "body": "b"}, headers=api.admin)
    assert response.status_code == 422 and "customer_id" in response.text
    response = await api.http.post(f"/v1/tickets/{tid}/csat", json={"score": 7}, headers=api.as_token(acme))
    assert response.status_code == 422

    history_before = await update_events(api, tid)
    response = await api.http.post(f"/v1/tickets/{tid}/replies", json={"body": "hi"}, headers=stranger)
    assert response.status_code == 403 and "only the assignee" in response.json()["detail"]
    # The validator refused it: nothing reached the ticket's history.
    history_after = await update_events(api, tid)
    assert history_after == history_before
    response = await api.http.post(
        f"/v1/tickets/{tid}/replies", json={"body": "hi", "agent_id": "zed"}, headers=owner
    )
    assert response.status_code == 403 and "themselves" in response.text
    response = await api.http.post(f"/v1/tickets/{tid}/csat", json={"score": 4}, headers=api.as_token(acme))
    assert response.status_code == 409 and "after resolution" in response.json()["detail"]
    response = await api.http.post(f"/v1/tickets/{tid}/status", json={"status": "resolved"}, headers=owner)
    assert response.status_code == 422
    response = await api.http.post(f"/v1/tickets/{tid}/assign", json={"agent_id": "nobody"}, headers=owner)
    assert response.status_code == 409 and "unknown agent" in response.json()["detail"]
    response = await api.http.get("/v1/tickets?cursor=garbage", headers=api.admin)
    assert response.status_code == 422

    await api.http.post(f"/v1/tickets/{tid}/resolve", json={}, headers=owner)
    await api.http.post(f"/v1/tickets/{tid}/csat", json={"score": 3}, headers=api.as_token(acme))
    await api.wait_for(tid, lambda t: t["status"] == "closed")
    response = await api.http.post(f"/v1/tickets/{tid}/replies", json={"body": "late"}, headers=owner)
    assert response.status_code == 409 and "closed" in response.json()["detail"]
    response = await api.http.post(
        f"/v1/tickets/{tid}/messages", json={"body": "hello?"}, headers=api.as_token(acme)
    )
    assert response.status_code == 409


async def test_idempotency_key_makes_creation_safe_to_retry(api):
    await make_agent(api, "alice")
    token = await make_customer(api, "acme")
    headers = {**api.as_token(token), "Idempotency-Key": "order-42"}
    body = {"subject": "Refund", "body": "Please refund order 42"}
    first = await api.http.post("/v1/tickets", json=body, headers=headers)
    again = await api.http.post("/v1/tickets", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    changed = await api.http.post("/v1/tickets", json={**body, "body": "something else"}, headers=headers)
    assert changed.status_code == 422 and "Idempotency-Key" in changed.text
    listed = (await api.http.get("/v1/tickets", headers=api.as_token(token))).json()["items"]
    assert [t["id"] for t in listed] == [first.json()["id"]]


async def test_lists_are_ordered_by_priority_then_age_and_paginate(api):
    big = await make_customer(api, "big", tier="enterprise")
    small = await make_customer(api, "small", tier="standard")
    ids = []
    for token, subject in [(small, "a"), (big, "b"), (small, "c"), (big, "d"), (small, "e")]:
        ids.append((await file_ticket(api, token, subject=subject, body="question"))["id"])
    for tid in ids:
        await api.wait_for(tid, lambda t: t["priority"] is not None)

    seen, cursor = [], None
    while True:
        url = "/v1/tickets?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.http.get(url, headers=api.admin)).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    enterprise, standard = [ids[1], ids[3]], [ids[0], ids[2], ids[4]]
    assert seen == enterprise + standard  # P2 first, then P4, each oldest first

    p4 = (await api.http.get("/v1/tickets?priority=P4&status=queued", headers=api.admin)).json()["items"]
    assert [t["id"] for t in p4] == standard
    mine = (await api.http.get("/v1/tickets", headers=api.as_token(small))).json()["items"]
    assert {t["customer_id"] for t in mine} == {"small"}


async def test_a_new_agent_takes_the_queued_ticket_at_once(api):
    token = await make_customer(api, "nordwind", language="de")
    ticket = await file_ticket(
        api,
        token,
        subject="Datenbank-Backup schlägt fehl",
        body="Das nächtliche Backup der Datenbank bricht mit einem Timeout ab.",
    )
    queued = await api.wait_for(ticket["id"], lambda t: t["status"] == "queued")
    assert queued["language"] == "de" and queued["module"] == "database"

    await make_agent(api, "lena", languages=[{"code": "de", "level": "native"}], skills={"database": 5})
    ticket = await api.wait_for(ticket["id"], lambda t: t["status"] == "open")
    assert ticket["assignee_id"] == "lena"
    assigned = [e for e in await api.timeline(ticket["id"]) if e["kind"] == "assigned"]
    assert assigned[0]["data"]["reason"].startswith("capacity freed")


async def test_reassignment_and_priority_change_through_the_api(api):
    alice = api.as_token(await make_agent(api, "alice", capacity=1))
    await make_agent(api, "bob", capacity=1)
    acme = await make_customer(api, "acme")
    ticket = await file_ticket(api, acme)
    ticket = await api.wait_for(ticket["id"], lambda t: t["status"] == "open")
    target = "bob" if ticket["assignee_id"] == "alice" else "alice"
    response = await api.http.post(
        f"/v1/tickets/{ticket['id']}/assign", json={"agent_id": target}, headers=alice
    )
    assert response.status_code == 200 and response.json()["assignee_id"] == target, response.text
    loads = {a["id"]: a["load"] for a in (await api.http.get("/v1/agents", headers=api.admin)).json()}
    assert loads == {"alice": int(target == "alice"), "bob": int(target == "bob")}

    response = await api.http.post(
        f"/v1/tickets/{ticket['id']}/priority", json={"priority": "P1"}, headers=alice
    )
    assert response.status_code == 200 and response.json()["priority"] == "P1"
    due = datetime.fromisoformat(response.json()["sla"]["first_response"]["due_at"])
    assert abs(due - (datetime.fromisoformat(ticket["created_at"]) + timedelta(minutes=15))) < timedelta(
        seconds=1
    )
    response = await api.http.post(
        f"/v1/tickets/{ticket['id']}/priority", json={"priority": "P1"}, headers=alice
    )
    assert response.status_code == 422


async def test_long_conversations_continue_as_new_without_losing_anything(api):
    agent = api.as_token(await make_agent(api, "alice"))
    acme = api.as_token(await make_customer(api, "acme"))
    ticket = await file_ticket(api, (await make_customer(api, "zed")), subject="chatty", body="hello")
    ticket = await api.wait_for(ticket["id"], lambda t: t["status"] == "open")
    tid = ticket["id"]
    for n in range(20):
        response = await api.http.post(
            f"/v1/tickets/{tid}/replies", json={"body": f"reply {n}"}, headers=agent
        )
        assert response.status_code == 201, response.text
    runs = [w async for w in api.client.list_workflows(f'WorkflowId="{ticket_workflow_id(tid)}"')]
    assert len(runs) >= 2, "the dev server suggests continue-as-new after 60 events"
    replies = [e for e in await api.timeline(tid) if e["kind"] == "agent_reply"]
    assert [e["data"]["body"] for e in replies] == [f"reply {n}" for n in range(20)]
    assert [e["seq"] for e in await api.timeline(tid)] == list(range(1, len(await api.timeline(tid)) + 1))
    response = await api.http.post(f"/v1/tickets/{tid}/resolve", json={}, headers=agent)
    assert response.status_code == 200 and response.json()["status"] == "resolved"
    assert (await api.http.get(f"/v1/tickets/{tid}", headers=acme)).status_code == 404
    await replay_and_maybe_record(api, tid, "continued")


async def test_housekeeping_starts_a_ticket_whose_workflow_never_started(api):
    await make_agent(api, "alice")
    await make_customer(api, "acme")
    row = await saved_ticket(
        api.http._transport.app.state.pool,
        "acme",
        subject="Lost start",
        body="invoice problem",
        channel="email",
        created_at=datetime.now(UTC) - timedelta(minutes=5),
        actor=Actor(type=ActorType.CUSTOMER, id="acme"),
    )
    report = await api.client.execute_workflow(
        HousekeepingWorkflow.run, id=f"housekeeping-{uuid.uuid4()}", task_queue=api.settings.task_queue
    )
    assert report.started == 1
    ticket = await api.wait_for(row["id"], lambda t: t["status"] == "open")
    assert ticket["assignee_id"] == "alice"
    # The next run builds the KPI rollups of the days the ticket's history now touches.
    report = await api.client.execute_workflow(
        HousekeepingWorkflow.run, id=f"housekeeping-{uuid.uuid4()}", task_queue=api.settings.task_queue
    )
    assert report.kpi_days > 0
    async with api.http._transport.app.state.pool.acquire() as conn:
        built = await conn.fetchval("SELECT count(*) FROM kpi_days WHERE timezone = 'UTC'")
    assert built >= 1


async def test_directory_crud_and_its_errors(api):
    region = {"id": "latam", "name": "LATAM", "timezone": "America/Sao_Paulo"}
    assert (await api.http.post("/v1/regions", json=region, headers=api.admin)).status_code == 201
    assert (await api.http.post("/v1/regions", json=region, headers=api.admin)).status_code == 409
    bad = {**region, "id": "mars", "timezone": "Mars/Olympus"}
    response = await api.http.post("/v1/regions", json=bad, headers=api.admin)
    assert response.status_code == 422 and "time zone" in response.text
    response = await api.http.put(
        "/v1/regions/latam", json={"name": "Latin America", "timezone": "America/Bogota"}, headers=api.admin
    )
    assert response.json()["timezone"] == "America/Bogota"

    await make_agent(api, "rosa", region="latam")
    assert (await api.http.post("/v1/agents", json=agent_body("rosa"), headers=api.admin)).status_code == 409
    response = await api.http.post(
        "/v1/agents", json=agent_body("ghost", region="nowhere"), headers=api.admin
    )
    assert response.status_code == 422 and "nowhere" in response.text
    response = await api.http.post(
        "/v1/agents", json={**agent_body("x1"), "skills": {"api": 9}}, headers=api.admin
    )
    assert response.status_code == 422
    assert (await api.http.delete("/v1/regions/latam", headers=api.admin)).status_code == 409
    assert (await api.http.delete("/v1/agents/rosa", headers=api.admin)).status_code == 200
    assert (await api.http.get("/v1/agents/rosa", headers=api.admin)).json()["active"] is False
    assert (await api.http.get("/v1/agents/nobody", headers=api.admin)).status_code == 404

    token = await make_customer(api, "solo")
    me = await api.http.get("/v1/customers/solo", headers=api.as_token(token))
    assert me.status_code == 200 and me.json()["tier"] == "business"
    assert (await api.http.get("/v1/customers/other", headers=api.as_token(token))).status_code == 404

    crm = {"role": "integration", "label": "crm", "scopes": ["tickets:write"]}
    response = await api.http.post("/v1/tokens", json=crm, headers=api.admin)
    integration = api.as_token(response.json()["token"])
    response = await api.http.post(
        "/v1/tickets", json={"customer_id": "solo", "subject": "s", "body": "b"}, headers=integration
    )
    assert response.status_code == 201
    assert (await api.http.post("/v1/tokens", json={"role": "agent"}, headers=api.admin)).status_code == 422


async def test_health_reports_both_dependencies(api):
    response = await api.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


def test_recorded_histories_are_present():
    assert list(HISTORIES.glob("*.json")), "record with MERIDIAN_RECORD_HISTORIES=1 pytest tests/test_api.py"
    for path in HISTORIES.glob("*.json"):
        assert json.loads(path.read_text())["events"]


async def test_inputs_that_postgresql_cannot_store_are_refused_up_front(api):
    acme = api.as_token(await make_customer(api, "acme"))
    response = await api.http.post("/v1/tickets", json={"subject": "a\u0000b", "body": "x"}, headers=acme)
    assert response.status_code == 422 and "control characters" in response.text
    bad_zone = {"id": "bad", "name": "Bad", "timezone": "America"}
    assert (await api.http.post("/v1/regions", json=bad_zone, headers=api.admin)).status_code == 422
    response = await api.http.post(
        "/v1/agents",
        json={**agent_body("x1"), "shift": {"days": [99], "start": "08:00", "end": "17:00"}},
        headers=api.admin,
    )
    assert response.status_code == 422
    response = await api.http.post(
        "/v1/agents", json={**agent_body("x2"), "languages": [{"code": "e\u0000n"}]}, headers=api.admin
    )
    assert response.status_code == 422
    old = "WyJQMSIsICIwMDAxLTAxLTAxVDAwOjAwOjAwKzAxOjAwIiwgMV0="  # ["P1", "0001-01-01T00:00:00+01:00", 1]
    assert (await api.http.get(f"/v1/tickets?cursor={old}", headers=api.admin)).status_code == 422
    assert (await api.http.get("/v1/tickets/99999999999999999999", headers=api.admin)).status_code == 422


async def test_a_deactivated_agent_loses_access(api):
    token = api.as_token(await make_agent(api, "leaver"))
    assert (await api.http.get("/v1/tickets", headers=token)).status_code == 200
    assert (await api.http.delete("/v1/agents/leaver", headers=api.admin)).status_code == 200
    assert (await api.http.get("/v1/tickets", headers=token)).status_code == 401


async def test_retried_replies_and_creations_do_not_duplicate(api):
    agent = api.as_token(await make_agent(api, "alice"))
    acme = await make_customer(api, "acme")
    headers = {**api.as_token(acme), "Idempotency-Key": "once"}
    first = await api.http.post("/v1/tickets", json={"subject": "s", "body": "invoice"}, headers=headers)
    tid = first.json()["id"]
    await api.wait_for(tid, lambda t: t["status"] == "open")
    replies = [
        await api.http.post(
            f"/v1/tickets/{tid}/replies", json={"body": "on it"}, headers={**agent, "Idempotency-Key": "r"}
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in replies] == [201, 201]
    assert replies[0].json()["seq"] == replies[1].json()["seq"]
    assert [e["kind"] for e in await api.timeline(tid)].count("agent_reply") == 1

    await api.http.post(f"/v1/tickets/{tid}/resolve", json={}, headers=agent)
    await api.http.post(f"/v1/tickets/{tid}/csat", json={"score": 4}, headers=api.as_token(acme))
    await api.wait_for(tid, lambda t: t["status"] == "closed")
    again = await api.http.post("/v1/tickets", json={"subject": "s", "body": "invoice"}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == tid and again.json()["status"] == "closed"


async def test_resolving_without_a_reply_counts_as_the_first_response(api):
    agent = api.as_token(await make_agent(api, "alice"))
    acme = await make_customer(api, "acme")
    ticket = await file_ticket(api, acme)
    await api.wait_for(ticket["id"], lambda t: t["status"] == "open")
    resolved = (
        await api.http.post(f"/v1/tickets/{ticket['id']}/resolve", json={"resolution": "done"}, headers=agent)
    ).json()
    assert resolved["first_response_at"] == resolved["resolved_at"]
    assert resolved["sla"]["first_response"]["state"] == "met"


async def test_what_a_fuzzer_found_gets_a_4xx_not_a_500(api):
    acme = api.as_token(await make_customer(api, "acme"))
    raw = {**acme, "Content-Type": "application/json"}
    checks = [
        ("POST", "/v1/tickets", '{"subject": "a\\ud800b", "body": "x"}'),  # a lone surrogate
        ("POST", "/v1/tickets/1/csat", '{"score": NaN}'),
        ("POST", "/v1/tickets/1/csat", '{"score": 1e999}'),
        ("POST", "/v1/tickets/1/csat", '{"score": true}'),
    ]
    for method, url, body in checks:
        response = await api.http.request(method, url, content=body, headers=raw)
        assert response.status_code == 422, (url, body, response.text)
        assert isinstance(response.json()["detail"], list)

    def cursor(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    for url in [
        "/v1/tickets?region=a%00b",
        "/v1/tickets?assignee=%00",
        "/v1/tickets?language=e%00",
        "/v1/tickets?cursor=" + cursor('["P1", "2026-01-01T00:00:00+00:00", Infinity]'),
        f"/v1/tickets?cursor={cursor('[' * 10_000)}",
        "/v1/agents?region=a%00",
    ]:
        response = await api.http.get(url, headers=api.admin)
        assert response.status_code == 422, (url, response.text)
    huge = "x" * 2_000_000
    response = await api.http.post("/v1/tickets", json={"subject": huge, "body": "b"}, headers=acme)
    assert response.status_code == 422 and len(response.content) < 2_000  # the input is not echoed back
