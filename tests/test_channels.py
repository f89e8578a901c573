"""`send_page` against a real PostgreSQL, a real local SMTP server and a real local HTTP server.

SMTP is an `aiosmtpd` Controller on 127.0.0.1 whose handler keeps every message (or answers RCPT with
a scripted reply); Slack and PagerDuty are paths on a `ThreadingHTTPServer` that records requests and
answers with scripted statuses and bodies. The activity runs in `ActivityEnvironment`.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channels import ChannelActivities, ChannelSettings
from activities.notifications import NotificationActivities
from domain.pages import Page, PageAction, PageChannel
from tests.conftest import add_customer, saved_ticket
from tests.loopback import JsonHandler, Loopback

AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
SLACK_PATH = "/services/T000/B000/slackhook"
PAGERDUTY_PATH = "/v2/enqueue"
SUMMARY = "P1 ticket 42 breached first response (APAC)"
DETAILS = {"level": 2, "region": "apac", "priority": "P1"}


# --- a real HTTP server for Slack and PagerDuty -----------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Reply:
    status: int
    body: bytes | None = None  # None: what the real service answers on success
    headers: dict[str, str] = field(default_factory=dict)


def default_reply(path: str, body: bytes) -> tuple[int, bytes, str]:
    if path == PAGERDUTY_PATH:
        dedup = json.loads(body).get("dedup_key")
        answer = {"status": "success", "message": "Event processed", "dedup_key": dedup}
        return 202, json.dumps(answer).encode(), "application/json"
    return 200, b"ok", "text/plain; charset=utf-8"


class Http(Loopback):
    """Records POSTs; answers each with the next scripted reply, else as Slack or PagerDuty would."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[Reply] = []
        self._lock = threading.Lock()
        server = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with server._lock:
                    server.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    reply = server.script.pop(0) if server.script else Reply(0)
                status, answer, content_type = default_reply(self.path, body)
                if reply.status:
                    status = reply.status
                    answer = reply.body if reply.body is not None else json.dumps({"s": status}).encode()
                self.send_json(status, answer, reply.headers, content_type)

        self.serve(Handler)

    def answer(self, *replies: int | Reply) -> None:
        self.script.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)


# --- a real SMTP server -----------------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: tuple[bytes, bytes] | None


class Mailbox:
    """An aiosmtpd handler: keeps every message; `rcpt_reply` (e.g. "550 ...") refuses recipients."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.rcpt_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = session.auth_data if session.authenticated else None
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message, login and tuple(login)))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"pager", b"s3cret")
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


@dataclass
class Smtp:
    mailbox: Mailbox
    port: int


def smtp_server(**smtp_parameters: Any) -> Iterator[Smtp]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ready_timeout=5, **smtp_parameters)
    controller.start()
    try:
        yield Smtp(mailbox, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    yield from smtp_server()


@pytest.fixture
def smtp_with_auth() -> Iterator[Smtp]:
    yield from smtp_server(authenticator=authenticate, auth_require_tls=False)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[Http]:
    with Http() as server:
        yield server


@pytest_asyncio.fixture
async def ticket_id(db: asyncpg.Pool) -> int:
    await add_customer(db, "acme")
    return (
        await saved_ticket(db, "acme", subject="Checkout is down", body="Nobody can pay.", created_at=AT)
    )["id"]


# --- helpers ----------------------------------------------------------------------------------


def make_page(ticket_id: int, channel: PageChannel, **overrides: Any) -> Page:
    values: dict[str, Any] = dict(
        id=str(uuid.uuid4()),
        ticket_id=ticket_id,
        channel=channel,
        summary=SUMMARY,
        severity="critical",
        at=AT,
        details=dict(DETAILS),
    )
    if channel is PageChannel.EMAIL:
        values.update(recipient_id="lina", recipient_email="lina@example.com")
    values.update(overrides)
    return Page(**values)


def slack_settings(web: Http, **overrides: Any) -> ChannelSettings:
    return ChannelSettings(slack_webhook_url=web.base + SLACK_PATH, **overrides)


def pagerduty_settings(web: Http) -> ChannelSettings:
    return ChannelSettings(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=web.base + PAGERDUTY_PATH)


def smtp_settings(port: int, **overrides: Any) -> ChannelSettings:
    values: dict[str, Any] = dict(smtp_host="127.0.0.1", smtp_port=port, smtp_from="pager@meridian.test")
    values.update(overrides)
    return ChannelSettings(**values)


async def send(acts: ChannelActivities, page: Page) -> str:
    return await ActivityEnvironment().run(acts.send_page, page)


async def stored(db: asyncpg.Pool, notification_id: str) -> asyncpg.Record:
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM notifications WHERE id = $1", uuid.UUID(notification_id))
    assert row is not None, "the page was never recorded"
    return row


async def count_rows(db: asyncpg.Pool) -> int:
    async with db.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM notifications")


# --- PagerDuty --------------------------------------------------------------------------------


async def test_pagerduty_trigger_sends_an_events_v2_trigger(db, http, web, ticket_id):
    acts = ChannelActivities(db, http, pagerduty_settings(web), None)
    page = make_page(ticket_id, PageChannel.PAGERDUTY)

    assert await send(acts, page) == "delivered"

    [req] = web.requests
    assert req.path == PAGERDUTY_PATH
    assert req.headers["content-type"] == "application/json"
    assert req.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": f"meridian-ticket-{ticket_id}",
        "payload": {
            "summary": SUMMARY,
            "source": "meridian",
            "severity": "critical",
            "custom_details": DETAILS,
        },
    }
    row = await stored(db, page.id)
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert row["last_error"] is None
    assert row["delivered_at"] is not None
    assert row["ticket_id"] == ticket_id
    assert (row["kind"], row["recipient_type"], row["recipient_id"]) == (
        "page:pagerduty:trigger",
        "channel",
        None,
    )
    assert row["payload"] == {
        "id": page.id,
        "ticket_id": ticket_id,
        "kind": "page:pagerduty:trigger",
        "recipient_type": "channel",
        "recipient_id": None,
        "at": "2024-05-06T07:08:09Z",
        "data": {**DETAILS, "summary": SUMMARY, "severity": "critical"},
    }


@pytest.mark.parametrize("action", [PageAction.ACKNOWLEDGE, PageAction.RESOLVE])
async def test_pagerduty_acknowledge_and_resolve_carry_no_payload(db, http, web, ticket_id, action):
    acts = ChannelActivities(db, http, pagerduty_settings(web), None)
    trigger = make_page(ticket_id, PageChannel.PAGERDUTY)
    follow_up = make_page(ticket_id, PageChannel.PAGERDUTY, action=action, summary=f"ticket {ticket_id}")

    assert await send(acts, trigger) == "delivered"
    assert await send(acts, follow_up) == "delivered"

    first, second = web.requests
    assert second.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": action.value,
        "dedup_key": f"meridian-ticket-{ticket_id}",
    }
    # The same incident: PagerDuty matches them on dedup_key.
    assert first.json()["dedup_key"] == second.json()["dedup_key"]
    row = await stored(db, follow_up.id)
    assert (row["status"], row["kind"]) == ("delivered", f"page:pagerduty:{action.value}")
    assert await count_rows(db) == 2


# --- Slack ------------------------------------------------------------------------------------


async def test_slack_posts_the_summary_as_text(db, http, web, ticket_id):
    acts = ChannelActivities(db, http, slack_settings(web), None)
    page = make_page(ticket_id, PageChannel.SLACK)

    assert await send(acts, page) == "delivered"

    [req] = web.requests
    assert req.path == SLACK_PATH
    assert req.headers["content-type"] == "application/json"
    message = req.json()
    assert message["text"] == SUMMARY
    assert message["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": SUMMARY}}
    context = message["blocks"][1]["elements"][0]["text"]
    assert f"ticket {ticket_id}" in context
    assert "severity critical" in context
    assert "region apac" in context
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"], row["kind"]) == ("delivered", 1, "page:slack:trigger")


async def test_slack_text_is_escaped_and_one_line(db, http, web, ticket_id):
    acts = ChannelActivities(db, http, slack_settings(web), None)
    page = make_page(ticket_id, PageChannel.SLACK, summary="P1 <!channel> R&D\nbreach > 5m")

    assert await send(acts, page) == "delivered"

    [req] = web.requests
    assert req.json()["text"] == "P1 &lt;!channel&gt; R&amp;D breach &gt; 5m"


# --- email ------------------------------------------------------------------------------------


async def test_email_from_to_subject_and_body(db, http, smtp, ticket_id):
    acts = ChannelActivities(db, http, smtp_settings(smtp.port), None)
    page = make_page(ticket_id, PageChannel.EMAIL)

    assert await send(acts, page) == "delivered"

    [mail] = smtp.mailbox.mails
    assert mail.mail_from == "pager@meridian.test"
    assert mail.rcpt_tos == ["lina@example.com"]
    assert mail.login is None  # no credentials configured: no AUTH
    message = mail.message
    assert message["From"] == "pager@meridian.test"
    assert message["To"] == "lina@example.com"
    assert message["Subject"] == SUMMARY
    assert message["Message-ID"] == f"<{page.id}@meridian.test>"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert body.splitlines()[0] == SUMMARY
    for line in (f"Ticket: {ticket_id}", "Severity: critical", "level: 2", "region: apac", "priority: P1"):
        assert line in body.splitlines()

    row = await stored(db, page.id)
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert (row["kind"], row["recipient_type"], row["recipient_id"]) == (
        "page:email:trigger",
        "agent",
        "lina",
    )


async def test_email_logs_in_only_when_configured(db, http, smtp_with_auth, ticket_id):
    settings = smtp_settings(smtp_with_auth.port, smtp_username="pager", smtp_password="s3cret")
    with_credentials = ChannelActivities(db, http, settings, None)
    without_credentials = ChannelActivities(db, http, smtp_settings(smtp_with_auth.port), None)

    assert await send(with_credentials, make_page(ticket_id, PageChannel.EMAIL)) == "delivered"
    assert await send(without_credentials, make_page(ticket_id, PageChannel.EMAIL)) == "delivered"

    with_login, without = smtp_with_auth.mailbox.mails
    assert with_login.login == (b"pager", b"s3cret")
    assert without.login is None


@pytest.mark.parametrize(
    ("configured", "missing"),
    [
        ({"smtp_starttls": True}, "STARTTLS"),
        ({"smtp_username": "pager", "smtp_password": "s3cret"}, "AUTH"),
    ],
    ids=["starttls", "auth"],
)
async def test_configured_but_not_offered_fails_for_good(db, http, smtp, ticket_id, configured, missing):
    # The plain server offers neither STARTTLS nor (without TLS) AUTH.
    acts = ChannelActivities(db, http, smtp_settings(smtp.port, **configured), None)
    page = make_page(ticket_id, PageChannel.EMAIL)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    assert caught.value.type == "EmailMisconfigured"
    assert caught.value.non_retryable is True
    assert missing in str(caught.value)
    assert smtp.mailbox.mails == []
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("failed", 1)


async def test_email_without_recipient_is_not_retried(db, http, smtp, ticket_id):
    acts = ChannelActivities(db, http, smtp_settings(smtp.port), None)
    page = make_page(ticket_id, PageChannel.EMAIL, recipient_email=None)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    assert caught.value.type == "NoRecipient"
    assert caught.value.non_retryable is True
    assert smtp.mailbox.mails == []
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("failed", 1)


async def test_smtp_550_is_rejected_for_good(db, http, smtp, ticket_id):
    smtp.mailbox.rcpt_reply = "550 5.1.1 No such user"
    acts = ChannelActivities(db, http, smtp_settings(smtp.port), None)
    page = make_page(ticket_id, PageChannel.EMAIL)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    err = caught.value
    assert err.type == "EmailRejected"
    assert err.non_retryable is True
    assert "550" in str(err)
    assert smtp.mailbox.mails == []
    row = await stored(db, page.id)
    assert row["status"] == "failed"
    assert row["attempts"] == 1
    assert row["last_error"].startswith("smtp answered 550")
    assert row["delivered_at"] is None


async def test_smtp_451_is_retried_and_a_later_attempt_delivers(db, http, smtp, ticket_id):
    smtp.mailbox.rcpt_reply = "451 4.3.0 Try again later"
    acts = ChannelActivities(db, http, smtp_settings(smtp.port), None)
    page = make_page(ticket_id, PageChannel.EMAIL)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    assert caught.value.type == "EmailUnavailable"
    assert caught.value.non_retryable is False
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"].startswith("smtp answered 451")

    smtp.mailbox.rcpt_reply = None
    assert await send(acts, page) == "delivered"
    assert len(smtp.mailbox.mails) == 1
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 2, None)


async def test_smtp_connection_refused_is_retried(db, http, ticket_id, closed_port):
    acts = ChannelActivities(db, http, smtp_settings(closed_port), None)
    page = make_page(ticket_id, PageChannel.EMAIL)

    with pytest.raises(aiosmtplib.SMTPConnectError) as caught:
        await send(acts, page)
    assert not isinstance(caught.value, ApplicationError)  # Temporal retries it
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"].startswith("SMTPConnectError: ")


# --- idempotency ------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [PageChannel.SLACK, PageChannel.PAGERDUTY, PageChannel.EMAIL])
async def test_a_delivered_page_is_never_sent_again(db, http, web, smtp, ticket_id, channel):
    # A second POST would be answered 500, so a non-idempotent activity could not pass quietly.
    web.answer(Reply(0), 500, 500)
    settings = ChannelSettings(
        **slack_settings(web).model_dump(include={"slack_webhook_url"}),
        **pagerduty_settings(web).model_dump(include={"pagerduty_routing_key", "pagerduty_url"}),
        **smtp_settings(smtp.port).model_dump(include={"smtp_host", "smtp_port", "smtp_from"}),
    )
    acts = ChannelActivities(db, http, settings, None)
    page = make_page(ticket_id, channel)

    assert await send(acts, page) == "delivered"
    first = await stored(db, page.id)
    assert await send(acts, page) == "delivered"
    assert await send(acts, page) == "delivered"

    assert len(web.requests) + len(smtp.mailbox.mails) == 1
    again = await stored(db, page.id)
    assert (again["status"], again["attempts"]) == ("delivered", 1)
    assert again["delivered_at"] == first["delivered_at"]
    assert await count_rows(db) == 1


# --- HTTP failures, Slack and PagerDuty alike -------------------------------------------------

HTTP_CHANNELS = [
    pytest.param(PageChannel.SLACK, "Slack", id="slack"),
    pytest.param(PageChannel.PAGERDUTY, "PagerDuty", id="pagerduty"),
]


def http_settings(channel: PageChannel, web: Http) -> ChannelSettings:
    return slack_settings(web) if channel is PageChannel.SLACK else pagerduty_settings(web)


@pytest.mark.parametrize(("channel", "name"), HTTP_CHANNELS)
async def test_500_is_retryable_and_a_later_attempt_delivers(db, http, web, ticket_id, channel, name):
    web.answer(Reply(500, b"internal error"))
    acts = ChannelActivities(db, http, http_settings(channel, web), None)
    page = make_page(ticket_id, channel)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    err = caught.value
    assert err.type == f"{name}Unavailable"
    assert err.non_retryable is False
    assert err.next_retry_delay is None
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"] == f"{name.lower()} answered 500: internal error"

    assert await send(acts, page) == "delivered"
    first, second = web.requests
    assert first.body == second.body
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 2, None)


@pytest.mark.parametrize(("channel", "name"), HTTP_CHANNELS)
@pytest.mark.parametrize(
    ("headers", "delay"),
    [({"Retry-After": "7"}, timedelta(seconds=7)), ({}, None)],
    ids=["retry-after", "no-retry-after"],
)
async def test_429_waits_for_retry_after(db, http, web, ticket_id, channel, name, headers, delay):
    web.answer(Reply(429, b"rate_limited", headers))
    acts = ChannelActivities(db, http, http_settings(channel, web), None)
    page = make_page(ticket_id, channel)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    err = caught.value
    assert err.type == f"{name}RateLimited"
    assert err.non_retryable is False
    assert err.next_retry_delay == delay
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert len(web.requests) == 1


@pytest.mark.parametrize(("channel", "name"), HTTP_CHANNELS)
@pytest.mark.parametrize("status", [400, 403, 404])
async def test_4xx_is_rejected_for_good(db, http, web, ticket_id, channel, name, status):
    web.answer(Reply(status, b"invalid_payload"))
    acts = ChannelActivities(db, http, http_settings(channel, web), None)
    page = make_page(ticket_id, channel)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    err = caught.value
    assert err.type == f"{name}Rejected"
    assert err.non_retryable is True
    assert str(status) in str(err)
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == f"{name.lower()} answered {status}: invalid_payload"
    assert row["delivered_at"] is None
    assert len(web.requests) == 1


@pytest.mark.parametrize(("channel", "name"), HTTP_CHANNELS)
async def test_connection_refused_is_retried(db, http, ticket_id, closed_port, channel, name):
    url = f"http://127.0.0.1:{closed_port}/x"
    settings = ChannelSettings(slack_webhook_url=url, pagerduty_routing_key=ROUTING_KEY, pagerduty_url=url)
    acts = ChannelActivities(db, http, settings, None)
    page = make_page(ticket_id, channel)

    with pytest.raises(httpx.ConnectError) as caught:
        await send(acts, page)
    assert not isinstance(caught.value, ApplicationError)
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"].startswith("ConnectError: ")


# --- the webhook channel ----------------------------------------------------------------------


async def test_webhook_pages_go_through_the_signed_webhook(db, http, web, ticket_id):
    webhook = NotificationActivities(db, http, web.base + "/hooks/meridian", "whsec")
    acts = ChannelActivities(db, http, ChannelSettings(), webhook)
    page = make_page(ticket_id, PageChannel.WEBHOOK, recipient_id="lina")

    assert await send(acts, page) == "delivered"
    assert await send(acts, page) == "delivered"

    [req] = web.requests
    assert req.path == "/hooks/meridian"
    assert req.headers["x-meridian-event"] == "page:webhook:trigger"
    assert req.headers["x-meridian-delivery"] == page.id
    expected = "sha256=" + hmac.new(b"whsec", req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req.headers["x-meridian-signature"], expected)
    assert req.json()["data"] == {**DETAILS, "summary": SUMMARY, "severity": "critical"}
    assert req.json()["recipient_type"] == "agent"
    row = await stored(db, page.id)
    assert (row["status"], row["attempts"]) == ("delivered", 1)


async def test_webhook_rejection_is_classified_by_the_webhook(db, http, web, ticket_id):
    web.answer(Reply(410))
    webhook = NotificationActivities(db, http, web.base + "/hooks/meridian", None)
    acts = ChannelActivities(db, http, ChannelSettings(), webhook)
    page = make_page(ticket_id, PageChannel.WEBHOOK)

    with pytest.raises(ApplicationError) as caught:
        await send(acts, page)
    assert caught.value.type == "WebhookRejected"
    assert caught.value.non_retryable is True
    assert (await stored(db, page.id))["status"] == "failed"


# --- no channel configured --------------------------------------------------------------------


@pytest.mark.parametrize("channel", list(PageChannel))
@pytest.mark.parametrize("blank", [None, ""], ids=["unset", "empty"])
async def test_an_unconfigured_channel_only_records(db, http, web, ticket_id, channel, blank):
    settings = ChannelSettings(slack_webhook_url=blank, pagerduty_routing_key=blank, smtp_host=blank)
    webhook = NotificationActivities(db, http, blank, "whsec")
    acts = ChannelActivities(db, http, settings, webhook if blank == "" else None)
    # An unconfigured email channel does not care that there is no address either.
    page = make_page(ticket_id, channel, recipient_email=None)

    assert await send(acts, page) == "recorded"
    assert await send(acts, page) == "recorded"  # a retry is a no-op too

    assert web.requests == []
    row = await stored(db, page.id)
    assert row["status"] == "recorded"
    assert row["attempts"] == 1
    assert row["last_error"] is None
    assert row["delivered_at"] is None
    assert row["kind"] == f"page:{channel.value}:trigger"
    assert row["payload"]["data"]["summary"] == SUMMARY
    assert await count_rows(db) == 1
