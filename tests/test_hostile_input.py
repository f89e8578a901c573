"""Malformed and hostile input through the real API, worker, PostgreSQL and Temporal: every bad
request gets a 4xx with a reason, and nothing is lost, half-written or executed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from meridian.settings import Settings
from tests.test_api import agent_body, file_ticket, make_agent, make_customer
from tests.test_limits import bearer
from tests.test_surveys import eventually

INJECTIONS = [
    "'; DROP TABLE tickets; --",
    "Robert'); DELETE FROM ticket_events WHERE ('1'='1",
    '" OR 1=1 --',
    "%' OR subject LIKE '%",
    "<script>alert('x')</script>",
    '<img src=x onerror="alert(1)">',
    "{{7*7}} ${7*7} $(rm -rf /)",
    "\\x00 is written out, not a NUL; 100% _done_",
]
JSON = {"Content-Type": "application/json"}


async def row_counts(api) -> dict[str, int]:
    pool = api.http._transport.app.state.pool
    async with pool.acquire() as conn:
        return {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("tickets", "ticket_events", "customers", "agents", "kb_articles")
        }


def reason(response) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(issue["msg"] for issue in detail)


async def assigned_ticket(api, customer: str, **fields) -> dict:
    ticket = await file_ticket(api, customer, **fields)
    return await api.wait_for(ticket["id"], lambda t: t["assignee_id"] is not None)


async def test_malformed_json_wrong_types_and_bad_encodings_are_422_with_a_reason(api):
    await make_agent(api, "alice")
    acme = bearer(await make_customer(api, "acme"))
    ticket = await assigned_ticket(api, acme["Authorization"].split()[1])
    before = await row_counts(api)
    bodies = [
        b'{"subject": "a", "body": ',  # cut short
        b'{"subject": "a", "body": "b",}',  # trailing comma
        b"[]",
        b'"just a string"',
        b"",
        b'{"subject": "\xff\xfe broken", "body": "b"}',  # not UTF-8
        b'{"subject": "\xed\xa0\x80", "body": "b"}',  # an encoded surrogate is not UTF-8 either
        b'{"subject": 7, "body": "b"}',
        b'{"subject": ["a"], "body": {"b": 1}}',
        b'{"subject": null, "body": "b"}',
        b'{"subject": "a", "body": "b", "priority": "P9"}',
        b'{"subject": "a", "body": "b", "channel": "fax"}',
        b'{"subject": "a", "body": "b", "priority": 1}',
        b'{"subject": "' + b"[" * 5000 + b'", "body": "' + b"x" * 70_000 + b'"}',  # body too long
    ]
    for raw in bodies:
        response = await api.http.post("/v1/tickets", content=raw, headers={**acme, **JSON})
        assert response.status_code == 422, (raw[:60], response.status_code, response.text)
        assert reason(response), raw[:60]
    response = await api.http.post(
        "/v1/tickets", content=b'{"subject": "\xff", "body": "b"}', headers={**acme, **JSON}
    )
    assert "not valid UTF-8" in reason(response)
    # Deeply nested JSON is refused without a 500 (the parser's recursion limit is not a crash).
    deep = b'{"subject": "a", "body": "b", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await api.http.post("/v1/tickets", content=deep, headers={**acme, **JSON})
    assert response.status_code == 400 and "parsing the body" in reason(response)
    for path, raw in [
        (f"/v1/tickets/{ticket['id']}/csat", b'{"score": "5"}'),  # strict: a string is not a score
        (f"/v1/tickets/{ticket['id']}/csat", b'{"score": 5.5}'),
        (f"/v1/tickets/{ticket['id']}/messages", b'{"body": 12}'),
        (f"/v1/tickets/{ticket['id']}/reopen", b'{"reason": false}'),
    ]:
        response = await api.http.post(path, content=raw, headers={**acme, **JSON})
        assert response.status_code == 422, (path, raw, response.text)
    assert await row_counts(api) == before


async def test_control_characters_are_refused_in_every_text_field(api):
    alice = bearer(await make_agent(api, "alice"))
    acme_token = await make_customer(api, "acme")
    acme = bearer(acme_token)
    ticket = await assigned_ticket(api, acme_token)
    tid = ticket["id"]
    before = await row_counts(api)
    history = await api.timeline(tid)
    for bad in ["nul\x00byte", "bell\x07", "escape\x1b[31m", "del\x7f"]:
        attempts = [
            ("POST", "/v1/tickets", {"subject": bad, "body": "b"}, acme),
            ("POST", "/v1/tickets", {"subject": "s", "body": bad}, acme),
            ("POST", f"/v1/tickets/{tid}/messages", {"body": bad}, acme),
            ("POST", f"/v1/tickets/{tid}/messages", {"body": "b", "message_id": bad}, acme),
            ("POST", f"/v1/tickets/{tid}/replies", {"body": bad}, alice),
            ("POST", f"/v1/tickets/{tid}/resolve", {"resolution": bad}, alice),
            ("POST", f"/v1/tickets/{tid}/status", {"status": "open", "reason": bad}, alice),
            ("POST", f"/v1/tickets/{tid}/handoff-note", {"next_action": bad}, alice),
            ("POST", f"/v1/tickets/{tid}/escalation/ack", {"note": bad}, alice),
            ("POST", "/v1/feedback", {"body": bad}, acme),
            ("POST", "/v1/customers", {"id": "x1", "name": bad, "tier": "standard", "language": "en"}),
            ("POST", "/v1/agents", {**agent_body("x2"), "name": bad}),
            (
                "POST",
                "/v1/kb/articles",
                {"module": "general", "language": "en", "title": bad, "body": "b"},
            ),
            ("POST", "/v1/glossary", {"term": bad}),
            ("GET", "/v1/tickets", {"q": bad}),
            ("GET", "/v1/kb/search", {"q": bad}),
            ("DELETE", "/v1/glossary", {"term": bad}),
        ]
        for method, url, body, *headers in attempts:
            query = body if method != "POST" else None
            response = await api.http.request(
                method,
                url,
                json=body if query is None else None,
                params=query,
                headers=(headers or [api.admin])[0],
            )
            assert response.status_code == 422, (method, url, body, response.text)
            assert "control characters" in reason(response), (url, response.text)
    assert await row_counts(api) == before
    assert await api.timeline(tid) == history


async def test_injection_strings_are_stored_and_shown_verbatim_never_executed(api):
    alice = bearer(await make_agent(api, "alice"))
    for text in INJECTIONS:
        customer_id = f"c{INJECTIONS.index(text)}"
        made = await api.http.post(
            "/v1/customers",
            json={"id": customer_id, "name": text, "tier": "standard", "language": "en"},
            headers=api.admin,
        )
        assert made.status_code == 201, made.text
        assert (await api.http.get(f"/v1/customers/{customer_id}", headers=api.admin)).json()["name"] == text
    token = await make_customer(api, "acme")
    tickets = {}
    for text in INJECTIONS:
        ticket = await file_ticket(api, token, subject=text[:200], body=f"{text}\nsecond line")
        tickets[text] = ticket["id"]
        assert ticket["subject"] == text[:200]
    tid = tickets[INJECTIONS[0]]
    await api.wait_for(tid, lambda t: t["assignee_id"] is not None)
    for text in INJECTIONS:
        reply = await api.http.post(f"/v1/tickets/{tid}/replies", json={"body": text}, headers=alice)
        assert reply.status_code == 201, reply.text
    events = await api.timeline(tid, bearer(token))
    assert [e["data"]["body"] for e in events if e["kind"] == "agent_reply"] == INJECTIONS
    assert events[0]["data"]["body"] == f"{INJECTIONS[0]}\nsecond line"

    # Search takes them as text: a quote, a LIKE wildcard or a tag finds only what contains it.
    for text in INJECTIONS:
        found = await api.http.get("/v1/tickets", params={"q": text}, headers=api.admin)
        assert found.status_code == 200, found.text
        assert [t["id"] for t in found.json()["items"]] == [tickets[text]], text
        kb = await api.http.get("/v1/kb/search", params={"q": text}, headers=api.admin)
        assert kb.status_code == 200 and kb.json()["results"] == [], kb.text
    for wildcard in ["%", "_", "\\"]:
        found = await api.http.get("/v1/tickets", params={"q": wildcard}, headers=api.admin)
        expected = {tickets[text] for text in INJECTIONS if wildcard in text}
        assert {t["id"] for t in found.json()["items"]} == expected, wildcard
    # Everything is still there: nothing was dropped or deleted by what the strings say.
    counts = await row_counts(api)
    assert counts["tickets"] == len(INJECTIONS) and counts["customers"] == len(INJECTIONS) + 1
    # JSON carries them as strings; the API never renders HTML.
    page = await api.http.get(f"/v1/tickets/{tickets[INJECTIONS[4]]}", headers=api.admin)
    assert page.headers["content-type"] == "application/json"
    assert json.loads(page.text)["subject"] == "<script>alert('x')</script>"


async def test_absurd_dates_page_sizes_and_enums_are_refused(api):
    await make_agent(api, "alice")
    calendar = {"id": "office", "name": "Office", "timezone": "Europe/Dublin", "always_open": True}
    made = await api.http.post("/v1/calendars", json=calendar, headers=api.admin)
    assert made.status_code == 201, made.text
    for url in [
        "/v1/tickets?limit=0",
        "/v1/tickets?limit=-1",
        "/v1/tickets?limit=1000000000",
        "/v1/tickets?limit=1e3",
        "/v1/tickets?limit=99999999999999999999999",
        "/v1/tickets?cursor=-1",
        "/v1/tickets?status=deleted",
        "/v1/tickets?priority=P0",
        "/v1/tickets?region=' OR 1=1 --",
        "/v1/tickets?stauts=open",  # a misspelt filter would otherwise list everything
        "/v1/feedback?limit=100000",
        "/v1/kb/search?q=x&limit=51",
        "/v1/feedback/counts?from=0000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/v1/feedback/counts?from=0001-01-01T00:00:00%2B05:00&to=2026-01-01T00:00:00Z",
        "/v1/feedback/counts?from=9999-12-31T00:00:00Z&to=9999-12-31T23:59:59-14:00",
        "/v1/feedback/counts?from=2026-01-01&to=2026-02-01",  # no offset: which day is meant?
        "/v1/coverage?from=0001-01-01T00:00:00Z&to=0001-01-02T00:00:00Z",
        "/v1/coverage?from=9999-12-30T00:00:00Z&to=9999-12-31T23:59:59-14:00",
        "/v1/agents/alice/shifts?from=2026-13-45T00:00:00Z&to=2026-01-02T00:00:00Z",
    ]:
        response = await api.http.get(url, headers=api.admin)
        assert response.status_code == 422, (url, response.text)
        assert reason(response), url
    for body in [
        {"calendar_id": "office", "start": "9999-12-31T23:00:00-14:00", "minutes": 60},
        {"calendar_id": "office", "start": "0001-01-01T00:00:00+14:00", "minutes": 60},
        {"calendar_id": "office", "start": "2026-01-01T00:00:00Z", "minutes": 10**12},
        {"calendar_id": "office", "start": "2026-01-01T00:00:00Z", "minutes": -5},
    ]:
        response = await api.http.post("/v1/sla/preview", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
    override = {"kind": "off", "starts_at": "9999-12-31T00:00:00Z", "ends_at": "9999-12-31T23:59:59-14:00"}
    response = await api.http.post("/v1/agents/alice/overrides", json=override, headers=api.admin)
    assert response.status_code == 422 and "between the years" in response.text
    for body in [
        {"id": "x", "name": "X", "tier": "platinum", "language": "en"},
        {"id": "x", "name": "X", "tier": "standard", "language": "klingon"},
    ]:
        assert (await api.http.post("/v1/customers", json=body, headers=api.admin)).status_code == 422
    response = await api.http.post("/v1/tokens", json={"role": "root"}, headers=api.admin)
    assert response.status_code == 422


def test_durations_in_settings_are_bounded():
    assert Settings(csat_delay="PT90M").csat_delay == timedelta(minutes=90)
    for bad in ["P99999999D", "-PT1H", "P999999999999D", "forever"]:
        with pytest.raises(ValidationError):
            Settings(csat_delay=bad)


async def test_changes_to_unknown_or_closed_tickets_say_why(api):
    alice = bearer(await make_agent(api, "alice"))
    token = await make_customer(api, "acme")
    acme = bearer(token)
    actions = [
        ("messages", {"body": "hello?"}, acme),
        ("replies", {"body": "late"}, alice),
        ("resolve", {}, alice),
        ("reopen", {"reason": "again"}, acme),
        ("status", {"status": "open"}, alice),
        ("assign", {"agent_id": "alice"}, alice),
        ("priority", {"priority": "P1"}, alice),
        ("csat", {"score": 4}, acme),
        ("handoff-note", {"next_action": "call"}, alice),
        ("handoff/ack", {}, alice),
        ("escalation/ack", {}, alice),
    ]
    for action, body, headers in actions:
        response = await api.http.post(f"/v1/tickets/987654321/{action}", json=body, headers=headers)
        assert response.status_code == 404 and "not found" in reason(response), (action, response.text)

    ticket = await assigned_ticket(api, token)
    tid = ticket["id"]
    assert (await api.http.post(f"/v1/tickets/{tid}/resolve", json={}, headers=alice)).status_code == 200
    assert (
        await api.http.post(f"/v1/tickets/{tid}/csat", json={"score": 5}, headers=acme)
    ).status_code == 200
    await api.wait_for(tid, lambda t: t["status"] == "closed")
    history = await api.timeline(tid)
    for action, body, headers in actions:
        response = await api.http.post(f"/v1/tickets/{tid}/{action}", json=body, headers=headers)
        assert response.status_code == 409 and "closed" in reason(response), (action, response.text)
    assert await api.timeline(tid) == history


async def test_a_reused_idempotency_key_with_another_body_is_refused(api):
    alice = bearer(await make_agent(api, "alice"))
    token = await make_customer(api, "acme")
    other = await make_customer(api, "globex")
    acme = bearer(token)
    first = {"subject": "Refund", "body": "Please refund order 42"}
    keyed = {**acme, "Idempotency-Key": "order-42"}
    created = await api.http.post("/v1/tickets", json=first, headers=keyed)
    again = await api.http.post("/v1/tickets", json=first, headers=keyed)
    assert (created.status_code, again.status_code) == (201, 200)
    changed = await api.http.post("/v1/tickets", json={**first, "priority": "P1"}, headers=keyed)
    assert changed.status_code == 422 and "Idempotency-Key" in reason(changed)
    # Keys belong to whoever sent them: another customer's "order-42" is their own ticket.
    theirs = await api.http.post(
        "/v1/tickets", json=first, headers={**bearer(other), "Idempotency-Key": "order-42"}
    )
    assert theirs.status_code == 201 and theirs.json()["id"] != created.json()["id"]

    tid = created.json()["id"]
    await api.wait_for(tid, lambda t: t["assignee_id"] is not None)
    reply = {"body": "Refunded."}
    key = {**alice, "Idempotency-Key": "reply-1"}
    one = await api.http.post(f"/v1/tickets/{tid}/replies", json=reply, headers=key)
    two = await api.http.post(f"/v1/tickets/{tid}/replies", json=reply, headers=key)
    assert (one.status_code, two.status_code) == (201, 201) and one.json()["seq"] == two.json()["seq"]
    for different in [{"body": "Refunded twice."}, {"body": "Refunded.", "internal": True}]:
        refused = await api.http.post(f"/v1/tickets/{tid}/replies", json=different, headers=key)
        assert refused.status_code == 422 and "already used" in reason(refused), refused.text

    message = {"body": "Thanks!", "message_id": "m-1"}
    assert (await api.http.post(f"/v1/tickets/{tid}/messages", json=message, headers=acme)).status_code == 202

    async def delivered():
        return [e for e in await api.timeline(tid) if e["data"].get("message_id") == "m-1"]

    await eventually(delivered)
    retried = await api.http.post(f"/v1/tickets/{tid}/messages", json=message, headers=acme)
    assert retried.status_code == 202
    refused = await api.http.post(
        f"/v1/tickets/{tid}/messages", json={**message, "body": "Something else"}, headers=acme
    )
    assert refused.status_code == 422 and "already used" in reason(refused)
    events = await api.timeline(tid)
    assert [e["data"]["body"] for e in events if e["kind"] == "agent_reply"] == ["Refunded."]
    assert [e["data"]["body"] for e in events if e["kind"] == "customer_message"] == ["Thanks!"]
