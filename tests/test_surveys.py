"""CSAT through the real stack: signed single-use links, praise, recovery with its deadline and
escalation, and open feedback. API and worker on the Temporal dev server, real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest_asyncio

from tests.conftest import make_settings, open_api
from tests.test_api import agent_body, file_ticket, make_agent, make_customer


@pytest_asyncio.fixture(loop_scope="session")
async def desk(db, dev_env, shared_deps, database_url):
    settings = make_settings(
        database_url,
        csat_delay=timedelta(seconds=1),
        reopen_window=timedelta(minutes=5),
        csat_recovery=True,
        recovery_deadline=timedelta(seconds=3),
        survey_questions=["Would you recommend us to a colleague?"],
    )
    async with open_api(db, dev_env, shared_deps, settings) as api:
        yield api


def pool(api):
    return api.http._transport.app.state.pool


async def eventually(check, patience: float = 20.0):
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        if result := await check():
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("never happened")
        await asyncio.sleep(0.2)


async def notifications(api, kind: str, ticket_id: int) -> list:
    async with pool(api).acquire() as conn:
        return await conn.fetch(
            "SELECT * FROM notifications WHERE kind = $1 AND ticket_id = $2 ORDER BY created_at",
            kind,
            ticket_id,
        )


async def resolved_ticket(
    api, customer_token: str, agent_token: str, subject="Invoice is wrong", body="The invoice total is wrong"
) -> int:
    ticket = await file_ticket(api, customer_token, subject=subject, body=body)
    await api.wait_for(ticket["id"], lambda t: t["assignee_id"] is not None)
    answer = {"body": "I corrected the invoice."}
    assert (
        await api.http.post(
            f"/v1/tickets/{ticket['id']}/replies", json=answer, headers=api.as_token(agent_token)
        )
    ).status_code == 201
    assert (
        await api.http.post(f"/v1/tickets/{ticket['id']}/resolve", json={}, headers=api.as_token(agent_token))
    ).status_code == 200
    return ticket["id"]


async def survey_link(api, ticket_id: int) -> str:
    async def sent():
        return await notifications(api, "csat_survey", ticket_id)

    [notification] = await eventually(sent)
    link = notification["payload"]["data"]["link"]
    assert link.startswith("http://127.0.0.1:8000/v1/surveys/")
    return link.removeprefix("http://127.0.0.1:8000")


async def test_a_signed_link_answers_once_and_praise_reaches_the_engineer_and_lead(desk):
    api = desk
    lead = agent_body("lena", skills={"general": 3}) | {"roles": ["lead"]}
    assert (await api.http.post("/v1/agents", json=lead, headers=api.admin)).status_code == 201
    agent = await make_agent(
        api, "ana", languages=[{"code": "es", "level": "native"}, {"code": "en", "level": "fluent"}]
    )
    customer = await make_customer(api, "globex", language="es")
    ticket_id = await resolved_ticket(
        api, customer, agent, "La factura está mal", "El importe total de la factura de mayo no es correcto."
    )
    path = await survey_link(api, ticket_id)

    form = await api.http.get(path)  # no login
    assert form.status_code == 200, form.text
    clicked = await api.http.get(f"{path}?utm_source=newsletter&utm_medium=email")  # as mail tools rewrite it
    assert clicked.status_code == 200 and clicked.json() == form.json()
    questions = {q["id"]: q for q in form.json()["questions"]}
    assert form.json()["language"] == "es" and questions["score"]["label"].startswith("¿Qué tan satisfecho")
    assert questions["reason"]["options"][0] == "response time" and questions["q1"]["kind"] == "text"

    bad_reason = await api.http.post(path, json={"score": 5, "reason": "vibes"})
    assert bad_reason.status_code == 422 and "reason must be one of" in bad_reason.text
    answer = {
        "score": 5,
        "reason": "solution",
        "comment": "¡Muy rápido, gracias Ana!",
        "answers": {"q1": "Sí"},
    }
    recorded = await api.http.post(path, json=answer)
    assert recorded.status_code == 200, recorded.text
    assert recorded.json() == {"ticket_id": ticket_id, "score": 5}

    again = await api.http.post(path, json=answer)
    assert again.status_code == 410 and "already answered" in again.text
    assert (await api.http.get(path)).status_code == 410
    payload, signature = path.rsplit("/", 1)[1].split(".")
    forged = f"/v1/surveys/{payload}.{'A' * len(signature)}"
    assert (await api.http.post(forged, json=answer)).status_code == 403
    assert (await api.http.get("/v1/surveys/not-a-token")).status_code in (403, 422)

    events = await api.timeline(ticket_id)
    [received] = [e for e in events if e["kind"] == "csat_received"]
    assert received["data"]["reason"] == "solution" and received["data"]["answers"] == {"q1": "Sí"}
    assert received["actor"]["type"] == "customer" and received["actor"]["id"] == "globex"

    async def praised():
        return (await api.http.get("/v1/agents/ana/praise", headers=api.admin)).json()

    [praise] = await eventually(praised)
    assert praise["ticket_id"] == ticket_id and praise["comment"] == answer["comment"]

    async def praise_sent():
        return {n["recipient_id"] for n in await notifications(api, "praise", ticket_id)} == {"ana", "lena"}

    await eventually(praise_sent)
    async with pool(api).acquire() as conn:
        await conn.execute("UPDATE surveys SET used_at = NULL, expires_at = now() - interval '1 minute'")
    assert (await api.http.get(path)).status_code == 410  # expired


async def test_an_unhappy_customer_gets_a_recovery_that_escalates_when_late(desk):
    api = desk
    for agent_id, roles in (("lena", ["lead"]), ("max", ["manager"])):
        body = agent_body(agent_id, skills={"general": 3}) | {"roles": roles}
        assert (await api.http.post("/v1/agents", json=body, headers=api.admin)).status_code == 201
    agent = await make_agent(api, "ana")
    customer = await make_customer(api, "acme")
    ticket_id = await resolved_ticket(api, customer, agent)
    path = await survey_link(api, ticket_id)
    assert (
        await api.http.post(path, json={"score": 1, "comment": "Nobody understood me"})
    ).status_code == 200

    async def opened():
        return (await api.http.get("/v1/recoveries", headers=api.admin)).json()

    [recovery] = await eventually(opened)
    assert (recovery["ticket_id"], recovery["lead_id"], recovery["score"]) == (ticket_id, "lena", 1)
    assert any(e["kind"] == "qa_review_flagged" for e in await api.timeline(ticket_id))

    async def lead_told():
        return await notifications(api, "csat_recovery", ticket_id)

    [told] = await eventually(lead_told)
    assert told["recipient_id"] == "lena"

    # Nobody acts within the 3 s deadline: the regional manager hears of it.
    async def overdue():
        found = (await api.http.get("/v1/recoveries", params={"status": "overdue"}, headers=api.admin)).json()
        return found and await notifications(api, "csat_recovery_overdue", ticket_id)

    [escalated] = await eventually(overdue)
    assert escalated["recipient_id"] == "max"

    done = await api.http.post(
        f"/v1/tickets/{ticket_id}/recovery", json={"note": "Called them; refunded"}, headers=api.admin
    )
    assert (
        done.status_code == 200
        and done.json()["status"] == "done"
        and done.json()["note"] == "Called them; refunded"
    )
    twice = await api.http.post(f"/v1/tickets/{ticket_id}/recovery", json={}, headers=api.admin)
    assert twice.status_code == 409
    assert (await api.http.post("/v1/tickets/999999/recovery", json={}, headers=api.admin)).status_code == 404


async def test_open_feedback_is_stored_and_counted_by_module(desk):
    api = desk
    customer = await make_customer(api, "acme")
    given = await api.http.post(
        "/v1/feedback",
        json={"body": "The invoice PDF is unreadable on mobile"},
        headers=api.as_token(customer),
    )
    assert given.status_code == 201, given.text
    assert given.json()["module"] == "billing" and given.json()["customer_id"] == "acme"
    explicit = await api.http.post(
        "/v1/feedback", json={"body": "Slow", "module": "video"}, headers=api.as_token(customer)
    )
    assert explicit.json()["module"] == "video"
    assert (
        await api.http.post(
            "/v1/feedback", json={"body": "x", "module": "nope"}, headers=api.as_token(customer)
        )
    ).status_code == 422
    assert (await api.http.post("/v1/feedback", json={"body": "x"})).status_code == 401
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    counts = await api.http.get("/v1/feedback/counts", params=window, headers=api.admin)
    assert counts.json()["by_module"] == {"billing": 1, "video": 1}
    assert (
        await api.http.get("/v1/feedback/counts", params=window, headers=api.as_token(customer))
    ).status_code == 403
    listed = await api.http.get("/v1/feedback", params={"module": "video"}, headers=api.admin)
    assert [f["body"] for f in listed.json()] == ["Slow"]
