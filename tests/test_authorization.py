"""Who may do what: customers see only their own tickets, agents act only as themselves,
integration tokens only within their scopes, survey links are single-use and unforgeable, webhook
signatures verify, and no secret ever reaches a log line. Real API, worker, PostgreSQL, Temporal."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import asyncpg
import pytest
import structlog
from starlette.requests import Request

from api import errors
from api.app import create_app
from api.auth import SCOPE_AREAS, Scope
from domain.enums import Role
from domain.surveys import InvalidToken, read_survey_token, sign_survey
from meridian.logging import QUIET_LOGGERS, json_formatter, route_structlog_to_stdlib
from tests.conftest import ADMIN_TOKEN, make_settings, open_api
from tests.loopback import Loopback
from tests.test_api import file_ticket, make_agent, make_customer
from tests.test_limits import bearer, token_for
from tests.test_surveys import eventually, notifications, resolved_ticket, survey_link

MIGRATION = Path(__file__).parent.parent / "db" / "migrations" / "0014_token_scopes.sql"


async def timeline_length(api, ticket_id: int) -> int:
    return len(await api.timeline(ticket_id))


# --- customers ----------------------------------------------------------------------------------------


async def test_a_customer_can_neither_see_nor_touch_another_customers_ticket(api):
    await make_agent(api, "alice")
    acme = await make_customer(api, "acme")
    globex = bearer(await make_customer(api, "globex"))
    ticket = await file_ticket(api, acme, subject="Acme's secret invoice")
    tid = ticket["id"]
    await api.wait_for(tid, lambda t: t["assignee_id"] is not None)
    before = await timeline_length(api, tid)

    listed = await api.http.get("/v1/tickets", headers=globex)
    assert listed.status_code == 200 and listed.json()["items"] == []
    for path in [f"/v1/tickets/{tid}", f"/v1/tickets/{tid}/timeline", "/v1/customers/acme"]:
        response = await api.http.get(path, headers=globex)
        assert response.status_code == 404, path  # not even told that it exists
        assert "Acme" not in response.text
    for action, body in [
        ("messages", {"body": "let me in"}),
        ("reopen", {"reason": "mine now"}),
        ("csat", {"score": 1}),
        ("solved-by-article", {"article_id": 1}),
    ]:
        response = await api.http.post(f"/v1/tickets/{tid}/{action}", json=body, headers=globex)
        assert response.status_code == 404, (action, response.text)
    # Staff actions are refused by role, whoever owns the ticket.
    for action, body in [
        ("replies", {"body": "hi", "agent_id": "alice"}),
        ("resolve", {}),
        ("status", {"status": "pending_customer"}),
        ("assign", {"agent_id": "alice"}),
        ("priority", {"priority": "P1"}),
        ("handoff-note", {"agent_id": "alice"}),
        ("escalation/ack", {}),
    ]:
        response = await api.http.post(f"/v1/tickets/{tid}/{action}", json=body, headers=bearer(acme))
        assert response.status_code == 403 and "roles" in response.text, action
    assert (await api.http.get(f"/v1/tickets/{tid}/links", headers=bearer(acme))).status_code == 403
    # Filing for someone else is refused too.
    response = await api.http.post(
        "/v1/tickets", json={"subject": "s", "body": "b", "customer_id": "acme"}, headers=globex
    )
    assert response.status_code == 403 and "themselves" in response.text

    assert await timeline_length(api, tid) == before  # none of it reached the ticket
    mine = await api.http.get(f"/v1/tickets/{tid}", headers=bearer(acme))
    assert mine.status_code == 200 and mine.json()["subject"] == "Acme's secret invoice"


# --- agents -------------------------------------------------------------------------------------------


async def test_an_agent_acts_only_as_themselves(api):
    alice = bearer(await make_agent(api, "alice", capacity=1))
    bob = bearer(await make_agent(api, "bob", capacity=1))
    acme = await make_customer(api, "acme")
    ticket = await file_ticket(api, acme)
    ticket = await api.wait_for(ticket["id"], lambda t: t["assignee_id"] is not None)
    tid = ticket["id"]
    owner, stranger = (alice, bob) if ticket["assignee_id"] == "alice" else (bob, alice)
    owner_id = ticket["assignee_id"]
    before = await timeline_length(api, tid)

    for action, body in [
        ("replies", {"body": "posing as the owner", "agent_id": owner_id}),
        ("handoff-note", {"agent_id": owner_id, "next_action": "nothing"}),
        ("handoff/ack", {"agent_id": owner_id}),
    ]:
        response = await api.http.post(f"/v1/tickets/{tid}/{action}", json=body, headers=stranger)
        assert response.status_code == 403 and "themselves" in response.text, action
    response = await api.http.post(f"/v1/tickets/{tid}/replies", json={"body": "me"}, headers=stranger)
    assert response.status_code == 403 and "only the assignee" in response.text
    assert await timeline_length(api, tid) == before

    # Admin tokens and the owner may; an agent's own internal note is always fine.
    assert (
        await api.http.post(f"/v1/tickets/{tid}/replies", json={"body": "on it"}, headers=owner)
    ).status_code == 201
    note = {"body": "looks like billing", "internal": True}
    assert (await api.http.post(f"/v1/tickets/{tid}/replies", json=note, headers=stranger)).status_code == 201
    events = await api.timeline(tid)
    assert [e["actor"]["id"] for e in events[before:]] == [owner_id, "bob" if owner is alice else "alice"]
    # Directory changes are admin-only.
    assert (await api.http.post("/v1/regions", json={"id": "x"}, headers=owner)).status_code == 403
    assert (await api.http.post("/v1/tokens", json={"role": "admin"}, headers=owner)).status_code == 403


# --- integration scopes -----------------------------------------------------------------------------


async def test_an_integration_token_is_limited_to_its_scopes(api):
    await make_agent(api, "alice")
    await make_customer(api, "acme")

    async def integration(*scopes: str) -> dict[str, str]:
        body = {"role": "integration", "label": "crm", "scopes": list(scopes)}
        created = await api.http.post("/v1/tokens", json=body, headers=api.admin)
        assert created.status_code == 201, created.text
        assert created.json()["scopes"] == sorted(scopes)
        return bearer(created.json()["token"])

    reader = await integration("tickets:read")
    writer = await integration("tickets:write")
    crm = await integration("directory:write", "directory:read")

    ticket = {"customer_id": "acme", "subject": "Sync failed", "body": "The CRM sync failed"}
    refused = await api.http.post("/v1/tickets", json=ticket, headers=reader)
    assert refused.status_code == 403 and "lacks the scope tickets:write" in refused.text
    created = await api.http.post("/v1/tickets", json=ticket, headers=writer)
    assert created.status_code == 201, created.text
    tid = created.json()["id"]
    assert (await api.http.get(f"/v1/tickets/{tid}", headers=writer)).status_code == 403
    assert (await api.http.get(f"/v1/tickets/{tid}", headers=reader)).status_code == 200
    assert (await api.http.get(f"/v1/tickets/{tid}/timeline", headers=reader)).status_code == 200

    customer = {"id": "initech", "name": "Initech", "tier": "standard", "language": "en"}
    refused = await api.http.post("/v1/customers", json=customer, headers=writer)
    assert refused.status_code == 403 and "directory:write" in refused.text
    assert (await api.http.post("/v1/customers", json=customer, headers=crm)).status_code == 201
    assert (await api.http.get("/v1/customers/initech", headers=crm)).status_code == 200
    assert (await api.http.get("/v1/tickets", headers=crm)).status_code == 403
    assert (await api.http.get("/v1/kb/search?q=sync", headers=crm)).status_code == 403

    # Every scope at once still does not make an admin.
    everything = await integration(*Scope)
    assert (await api.http.post("/v1/regions", json={"id": "x"}, headers=everything)).status_code == 403
    assert (await api.http.post("/v1/tokens", json={"role": "admin"}, headers=everything)).status_code == 403

    # Scopes are for integration tokens, which need at least one; unknown scopes are refused.
    for body, reason in [
        ({"role": "integration"}, "need scopes"),
        ({"role": "integration", "scopes": ["tickets:delete"]}, "scopes"),
        ({"role": "customer", "subject_id": "acme", "scopes": ["tickets:read"]}, "only integration"),
    ]:
        response = await api.http.post("/v1/tokens", json=body, headers=api.admin)
        assert response.status_code == 422 and reason in response.text, body


async def test_a_token_from_before_scopes_keeps_what_it_could_do(api, db):
    """The migration gave existing integration tokens every scope there was; a new one has what it asks."""
    listed = set(re.findall(r"'([a-z]+:[a-z]+)'", MIGRATION.read_text()))
    assert listed == set(Scope)
    legacy = await token_for(db, Role.INTEGRATION, None, scopes=sorted(listed))
    await make_customer(api, "acme")
    body = {"customer_id": "acme", "subject": "Legacy", "body": "From the old CRM"}
    assert (await api.http.post("/v1/tickets", json=body, headers=bearer(legacy))).status_code == 201
    bare = await token_for(db, Role.INTEGRATION, None, scopes=[])
    assert (await api.http.get("/v1/tickets", headers=bearer(bare))).status_code == 403


def test_every_endpoint_belongs_to_a_scope_area():
    """A new router whose tag has no area would be closed to integrations without anyone noticing."""
    app = create_app(make_settings("postgresql://unused"))
    # From the OpenAPI document: recent FastAPI keeps included routers whole in `app.routes`, where
    # a walk looking for APIRoutes finds only /healthz and /metrics and so checks nothing at all.
    operations = [
        (method.upper(), path, operation.get("tags", []))
        for path, methods in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method, operation in methods.items()
    ]
    assert len(operations) >= 70, operations  # every router's operations, not a handful
    for method, path, tags in operations:
        assert any(tag in SCOPE_AREAS for tag in tags), (method, path, tags)


# --- survey links -------------------------------------------------------------------------------------


def test_survey_tokens_are_unguessable_and_tamper_proof():
    secret = secrets.token_bytes(32)
    survey = uuid.uuid4()
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    token = sign_survey(secret, survey, expires)
    assert read_survey_token(secret, token) == (survey, expires)
    payload, signature = token.split(".")
    # 128 bits of HMAC-SHA256 over a random survey id: no two links alike, none derivable.
    assert len(signature) >= 21 and token != sign_survey(secret, uuid.uuid4(), expires)
    longer = sign_survey(secret, survey, expires + timedelta(days=365))
    forgeries = [
        f"{longer.split('.')[0]}.{signature}",  # a later expiry with the old signature
        f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}",
        f"{payload}.{signature[:-1]}{'B' if signature[-1] == 'A' else 'A'}",  # same bytes, other spelling
        f"{payload}.",
        token + ".x",
        sign_survey(secrets.token_bytes(32), survey, expires),  # signed with another key
    ]
    for forged in forgeries:
        with pytest.raises(InvalidToken):
            read_survey_token(secret, forged)


# --- webhooks and logs ----------------------------------------------------------------------------------


class Webhook(Loopback):
    def __init__(self):
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                deliveries.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.serve(Handler)


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(json_formatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def every_log_line():
    """Everything any logger writes, at DEBUG, configured and rendered as in production."""
    saved = structlog.get_config()
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in QUIET_LOGGERS)]
    levels = [logger.level for logger in loggers]
    collect = Collect()
    route_structlog_to_stdlib(cache=False)
    loggers[0].addHandler(collect)
    loggers[0].setLevel(logging.DEBUG)
    for quiet in loggers[1:]:
        quiet.setLevel(logging.WARNING)  # as `configure_logging` leaves them in every process
    try:
        yield collect.lines
    finally:
        loggers[0].removeHandler(collect)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        structlog.configure(**saved)


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Meridian-Signature", ""), expected)


async def test_webhooks_are_signed_and_no_secret_reaches_the_logs(db, dev_env, shared_deps, database_url):
    webhook_secret = "whsec-" + secrets.token_hex(16)
    with Webhook() as hook, every_log_line() as lines:
        settings = make_settings(
            database_url,
            csat_delay=timedelta(seconds=1),
            webhook_url=f"{hook.base}/meridian",
            webhook_secret=webhook_secret,
            smtp_password="smtp-" + secrets.token_hex(8),
        )
        async with open_api(db, dev_env, shared_deps, settings) as api:
            agent = await make_agent(api, "alice")
            customer = await make_customer(api, "acme")
            made = await api.http.post(
                "/v1/tokens", json={"role": "integration", "scopes": ["tickets:read"]}, headers=api.admin
            )
            integration = made.json()["token"]
            ticket_id = await resolved_ticket(api, customer, agent)
            assert (await api.http.get("/v1/tickets", headers=bearer(integration))).status_code == 200
            assert (await api.http.get("/v1/tickets", headers=bearer("not-a-token-" * 3))).status_code == 401
            link = await survey_link(api, ticket_id)
            survey_token = link.rsplit("/", 1)[1]
            assert (await api.http.get(link)).status_code == 200
            assert (await api.http.post(link, json={"score": 5})).status_code == 200
            assert (await api.http.post(link, json={"score": 5})).status_code == 410

            async def survey_delivered():
                return [d for d in hook.deliveries if d[0].get("X-Meridian-Event") == "csat_survey"]

            await eventually(survey_delivered)
            sent = await notifications(api, "csat_survey", ticket_id)
        secret_values = {
            "admin token": ADMIN_TOKEN,
            "agent token": agent,
            "customer token": customer,
            "integration token": integration,
            "survey token": survey_token,
            "webhook secret": webhook_secret,
            "smtp password": settings.smtp_password,
        }

    # Every delivery is signed with the secret over exactly the bytes sent; anything else fails.
    assert len(hook.deliveries) >= 2 and sent
    for headers, body in hook.deliveries:
        assert verifies(webhook_secret, headers, body), headers
        assert not verifies(webhook_secret, headers, body + b" ")
        assert not verifies("another-secret", headers, body)
        assert json.loads(body)["id"] == headers["X-Meridian-Delivery"]

    # The logs saw the whole run (requests, the survey, workflow activity) and none of the secrets.
    text = "\n".join(lines)
    assert '"path": "/v1/surveys/[redacted]"' in text and '"status": 410' in text
    assert "deliver_notification" in text or "/v1/tickets" in text
    leaked = [name for name, value in secret_values.items() if value in text]
    assert not leaked, f"written to the logs: {leaked}"


async def test_a_value_refused_on_a_survey_link_is_logged_without_the_link(monkeypatch):
    """The database's refusals are logged with their path, and a survey link's path is the credential."""
    said: list[tuple[str, dict]] = []

    class Recorder:
        def warning(self, event: str, **fields) -> None:
            said.append((event, fields))

    monkeypatch.setattr(errors, "log", Recorder())
    link = sign_survey(secrets.token_bytes(32), uuid.uuid4(), datetime(2030, 1, 1, tzinfo=UTC))
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v1/surveys/{link}",
        "headers": [],
        "query_string": b"",
    }
    response = await errors.invalid_data(Request(scope), asyncpg.DataError("invalid byte sequence"))
    assert response.status_code == 422
    assert said and said[0][1]["path"] == "/v1/surveys/[redacted]"
    assert link not in repr(said)
