"""`deliver_notification` against a real PostgreSQL and a real local HTTP webhook.

The webhook is a `ThreadingHTTPServer` on 127.0.0.1 that records every request and answers with a
scripted sequence of status codes; the activity runs in `ActivityEnvironment` with a real httpx client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notifications import NotificationActivities
from domain.notifications import Notification
from tests.conftest import add_customer, saved_ticket
from tests.loopback import JsonHandler, Loopback

SECRET = "whsec-test-secret"
AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


# --- a real webhook ---------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class Webhook(Loopback):
    """Records requests; answers each with the next scripted reply (200 once the script runs out)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[Reply] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with webhook._lock:
                    webhook.requests.append(
                        Received(
                            method="POST",
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                        )
                    )
                    reply = webhook.script.pop(0) if webhook.script else Reply(200)
                self.send_json(reply.status, {"status": reply.status}, reply.headers)

        self.serve(Handler)
        self.url = f"{self.base}/hooks/meridian"

    def answer(self, *replies: int | Reply) -> None:
        self.script.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as server:
        yield server


@pytest_asyncio.fixture
async def ticket_id(db: asyncpg.Pool) -> int:
    await add_customer(db, "acme")
    return (
        await saved_ticket(
            db, "acme", subject="Invoice charged twice", body="We were charged twice for May.", created_at=AT
        )
    )["id"]


# --- helpers ----------------------------------------------------------------------------------


def make_notification(ticket_id: int) -> Notification:
    return Notification(
        id=str(uuid.uuid4()),
        ticket_id=ticket_id,
        kind="ticket.created",
        recipient_type="customer",
        recipient_id="acme",
        at=AT,
        # Non-ASCII on purpose: the signature must cover the exact bytes sent.
        data={"subject": "Café ☕ — invoice", "priority": "P2", "tags": ["billing", 2]},
    )


def expected_json(n: Notification) -> dict:
    """What the receiver should parse, written out independently of the activity's serialiser."""
    return {
        "id": n.id,
        "ticket_id": n.ticket_id,
        "kind": "ticket.created",
        "recipient_type": "customer",
        "recipient_id": "acme",
        "at": "2024-05-06T07:08:09Z",
        "data": {"subject": "Café ☕ — invoice", "priority": "P2", "tags": ["billing", 2]},
    }


def my_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


async def deliver(activities: NotificationActivities, notification: Notification) -> str:
    return await ActivityEnvironment().run(activities.deliver_notification, notification)


async def stored(db: asyncpg.Pool, notification_id: str) -> asyncpg.Record:
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM notifications WHERE id = $1", uuid.UUID(notification_id))
    assert row is not None, "the notification was never recorded"
    return row


async def count_rows(db: asyncpg.Pool) -> int:
    async with db.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM notifications")


# --- 2xx --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 204])
async def test_2xx_delivers_signed_exact_json(db, http, webhook, ticket_id, status):
    webhook.answer(status)
    acts = NotificationActivities(db, http, webhook.url, SECRET)
    n = make_notification(ticket_id)

    assert await deliver(acts, n) == "delivered"

    assert len(webhook.requests) == 1
    req = webhook.requests[0]
    assert req.method == "POST"
    assert req.path == "/hooks/meridian"
    assert json.loads(req.body.decode("utf-8")) == expected_json(n)
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-meridian-event"] == "ticket.created"
    assert req.headers["x-meridian-delivery"] == n.id
    signature = req.headers["x-meridian-signature"]
    assert signature.startswith("sha256=")
    assert hmac.compare_digest(signature, my_signature(SECRET, req.body))
    # ...and it is bound to the secret and to the body.
    assert not hmac.compare_digest(signature, my_signature("another-secret", req.body))
    assert not hmac.compare_digest(signature, my_signature(SECRET, req.body + b" "))

    row = await stored(db, n.id)
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert row["last_error"] is None
    assert row["delivered_at"] is not None
    assert row["ticket_id"] == ticket_id
    assert (row["kind"], row["recipient_type"], row["recipient_id"]) == ("ticket.created", "customer", "acme")
    assert row["payload"] == expected_json(n)


@pytest.mark.parametrize("secret", [None, ""])
async def test_no_secret_sends_no_signature(db, http, webhook, ticket_id, secret):
    acts = NotificationActivities(db, http, webhook.url, secret)
    n = make_notification(ticket_id)

    assert await deliver(acts, n) == "delivered"

    [req] = webhook.requests
    assert "x-meridian-signature" not in req.headers
    assert req.headers["x-meridian-event"] == "ticket.created"
    assert req.headers["x-meridian-delivery"] == n.id
    assert json.loads(req.body) == expected_json(n)
    assert (await stored(db, n.id))["status"] == "delivered"


async def test_redelivery_after_success_does_not_post_again(db, http, webhook, ticket_id):
    # A second POST would be answered 500, so a non-idempotent activity could not pass quietly.
    webhook.answer(200, 500, 500)
    acts = NotificationActivities(db, http, webhook.url, SECRET)
    n = make_notification(ticket_id)

    assert await deliver(acts, n) == "delivered"
    first = await stored(db, n.id)
    assert await deliver(acts, n) == "delivered"
    assert await deliver(acts, n) == "delivered"

    assert len(webhook.requests) == 1
    again = await stored(db, n.id)
    assert again["status"] == "delivered"
    assert again["attempts"] == 1
    assert again["delivered_at"] == first["delivered_at"]
    assert await count_rows(db) == 1


# --- failures ---------------------------------------------------------------------------------


async def test_500_is_retryable_and_a_later_200_delivers(db, http, webhook, ticket_id):
    webhook.answer(500, 200)
    acts = NotificationActivities(db, http, webhook.url, SECRET)
    n = make_notification(ticket_id)

    with pytest.raises(ApplicationError) as caught:
        await deliver(acts, n)
    err = caught.value
    assert err.type == "WebhookUnavailable"
    assert err.non_retryable is False
    assert err.next_retry_delay is None
    assert "500" in str(err)

    row = await stored(db, n.id)
    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert row["last_error"] == "webhook answered 500"
    assert row["delivered_at"] is None

    # Temporal's retry: the same notification again.
    assert await deliver(acts, n) == "delivered"
    row = await stored(db, n.id)
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    assert row["last_error"] is None
    assert row["delivered_at"] is not None

    # Both attempts carried the same delivery id and identical, validly signed bytes.
    first, second = webhook.requests
    assert first.body == second.body
    assert first.headers["x-meridian-delivery"] == second.headers["x-meridian-delivery"] == n.id
    for req in (first, second):
        assert hmac.compare_digest(req.headers["x-meridian-signature"], my_signature(SECRET, req.body))
    assert await count_rows(db) == 1


@pytest.mark.parametrize("status", [502, 503])
async def test_other_5xx_are_unavailable(db, http, webhook, ticket_id, status):
    webhook.answer(status)
    acts = NotificationActivities(db, http, webhook.url, SECRET)
    n = make_notification(ticket_id)

    with pytest.raises(ApplicationError) as caught:
        await deliver(acts, n)
    assert caught.value.type == "WebhookUnavailable"
    assert caught.value.non_retryable is False
    assert (await stored(db, n.id))["status"] == "pending"


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"Retry-After": "7"}, timedelta(seconds=7)),
        ({}, None),
        # An HTTP-date is not parsed: Temporal's own backoff applies.
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    ],
    ids=["seconds", "absent", "http-date"],
)
async def test_429_is_rate_limited_with_retry_after(db, http, webhook, ticket_id, headers, delay):
    webhook.answer(Reply(429, headers))
    acts = NotificationActivities(db, http, webhook.url, SECRET)
    n = make_notification(ticket_id)

    with pytest.raises(ApplicationError) as caught:
        await deliver(acts, n)
    err = caught.value
    assert err.type == "WebhookRateLimited"
    assert err.non_retryable is False
    assert err.next_retry_delay == delay

    row = await stored(db, n.id)
    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert row["last_error"] == "webhook answered 429"
    assert len(webhook.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_4xx_is_rejected_for_good(db, http, webhook, ticket_id, status):
    webhook.answer(status)
    acts = NotificationActivities(db, http, webhook.url, SECRET)
    n = make_notification(ticket_id)

    with pytest.raises(ApplicationError) as caught:
        await deliver(acts, n)
    err = caught.value
    assert err.type == "WebhookRejected"
    assert err.non_retryable is True
    assert str(status) in str(err)

    row = await stored(db, n.id)
    assert row["status"] == "failed"
    assert row["last_error"] == f"webhook answered {status}"
    assert row["delivered_at"] is None
    assert len(webhook.requests) == 1


async def test_4xx_counts_one_attempt_per_post(db, http, webhook, ticket_id):
    """BUG: a rejected delivery is marked twice ('pending' by `_failed`, then 'failed'), so one POST
    counts as two attempts. 500, 429 and 2xx each count one attempt per POST."""
    webhook.answer(400)
    acts = NotificationActivities(db, http, webhook.url, SECRET)
    n = make_notification(ticket_id)

    with pytest.raises(ApplicationError):
        await deliver(acts, n)

    assert len(webhook.requests) == 1
    assert (await stored(db, n.id))["attempts"] == 1


async def test_connection_refused_propagates_and_stays_pending(db, http, ticket_id, closed_port):
    acts = NotificationActivities(db, http, f"http://127.0.0.1:{closed_port}/hook", SECRET)
    n = make_notification(ticket_id)

    with pytest.raises(httpx.ConnectError) as caught:
        await deliver(acts, n)
    # Not an ApplicationError, so nothing marks it non-retryable: Temporal retries it.
    assert not isinstance(caught.value, ApplicationError)

    row = await stored(db, n.id)
    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert row["last_error"].startswith("ConnectError: ")
    assert row["delivered_at"] is None


# --- no channel -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, ""])
async def test_no_webhook_url_only_records(db, http, webhook, ticket_id, url):
    acts = NotificationActivities(db, http, url, SECRET)
    n = make_notification(ticket_id)

    assert await deliver(acts, n) == "recorded"
    assert await deliver(acts, n) == "recorded"  # a retry is a no-op too

    assert webhook.requests == []
    row = await stored(db, n.id)
    assert row["status"] == "recorded"
    assert row["last_error"] is None
    assert row["delivered_at"] is None
    assert row["payload"] == expected_json(n)
    assert await count_rows(db) == 1
