"""Sends pages over the escalation channels: webhook, Slack, PagerDuty (Events API v2) and email.

Every page is first recorded in the notifications log under its own id, so a retried or repeated
activity never sends twice once a send succeeded. A channel left unconfigured only records the page.
Failures are classified as for the webhook: 429 waits for Retry-After, other 4xx (and SMTP 5xx) fail
for good, 5xx, SMTP 4xx, timeouts and connection errors are retried by Temporal with backoff, and recorded as
failed on the last attempt (`MERIDIAN_NOTIFY_ATTEMPTS`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import aiosmtplib
import asyncpg
import httpx
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.notifications import NotificationActivities, not_delivered
from db import notifications
from domain.notifications import Notification
from domain.pages import Page, PageAction, PageChannel

SMTP_TIMEOUT = 10.0  # seconds, well inside the activity's start-to-close timeout
PAGERDUTY_SUMMARY_CHARS = 1024  # the Events API's limit
ERROR_BODY_CHARS = 200


class ChannelSettings(BaseModel):
    slack_webhook_url: str | None = None
    pagerduty_routing_key: str | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "meridian@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    notify_timeout: float = 10.0  # seconds one Slack or PagerDuty request may take
    notify_attempts: int = 10  # then the page is recorded as failed


# --- what goes on the wire --------------------------------------------------------------------


def page_notification(page: Page) -> Notification:
    """The notifications-log row for a page (and the body a webhook receives)."""
    return Notification(
        id=page.id,
        ticket_id=page.ticket_id,
        kind=f"page:{page.channel.value}:{page.action.value}",
        recipient_type="agent" if page.recipient_id else "channel",
        recipient_id=page.recipient_id,
        at=page.at,
        data={**_details(page), "summary": page.summary, "severity": page.severity},
    )


def _details(page: Page) -> dict[str, Any]:
    return page.model_dump(mode="json", include={"details"})["details"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(page: Page) -> dict[str, Any]:
    summary = _slack_escape(_one_line(page.summary))
    facts = [f"ticket {page.ticket_id}", f"severity {page.severity}"]
    if page.action is not PageAction.TRIGGER:
        facts.append(page.action.value)
    facts += [f"{key} {value}" for key, value in _details(page).items() if value is not None]
    return {
        "text": summary,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _slack_escape(" · ".join(facts))}],
            },
        ],
    }


def pagerduty_event(page: Page, routing_key: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": page.action.value,
        # One incident per ticket: later levels update it, acknowledge and resolve close it.
        "dedup_key": f"meridian-ticket-{page.ticket_id}",
    }
    if page.action is PageAction.TRIGGER:
        event["payload"] = {
            "summary": _one_line(page.summary)[:PAGERDUTY_SUMMARY_CHARS],
            "source": "meridian",
            "severity": page.severity,
            "custom_details": _details(page),
        }
    return event


def email_message(page: Page, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = page.recipient_email
    message["Subject"] = _one_line(page.summary)
    message["Date"] = format_datetime(page.at)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "meridian"
    message["Message-ID"] = f"<{page.id}@{domain}>"  # the same on every retry
    message["X-Meridian-Delivery"] = page.id
    lines = [
        page.summary,
        "",
        f"Ticket: {page.ticket_id}",
        f"Severity: {page.severity}",
        f"Action: {page.action.value}",
        f"At: {page.at.isoformat()}",
    ]
    details = _details(page)
    if details:
        lines.append("")
        lines += [f"{key}: {value}" for key, value in details.items()]
    message.set_content("\n".join(lines) + "\n")
    return message


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("Retry-After", "")
    return timedelta(seconds=int(value)) if value.isascii() and value.isdigit() else None


# --- the activity -----------------------------------------------------------------------------


class ChannelActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        settings: ChannelSettings,
        webhook: NotificationActivities | None = None,
    ):
        self.pool = pool
        self.http = http
        self.settings = settings
        self.webhook = webhook

    @activity.defn(name="send_page")
    async def send_page(self, page: Page) -> str:
        notification = page_notification(page)
        async with self.pool.acquire() as conn:
            status = await notifications.record(conn, notification)
        if status in ("delivered", "recorded"):
            return status

        settings = self.settings
        match page.channel:
            case PageChannel.WEBHOOK:
                if self.webhook is None:
                    return await self._mark(page, "recorded")
                # Records (a no-op now), posts, classifies and marks exactly as any notification.
                return await self.webhook.deliver_notification(notification)
            case PageChannel.SLACK:
                if not settings.slack_webhook_url:
                    return await self._mark(page, "recorded")
                return await self._post(page, "Slack", settings.slack_webhook_url, slack_message(page))
            case PageChannel.PAGERDUTY:
                if not settings.pagerduty_routing_key:
                    return await self._mark(page, "recorded")
                event = pagerduty_event(page, settings.pagerduty_routing_key)
                return await self._post(page, "PagerDuty", settings.pagerduty_url, event)
            case PageChannel.EMAIL:
                if not settings.smtp_host:
                    return await self._mark(page, "recorded")
                return await self._email(page)
        raise ApplicationError(f"unknown page channel {page.channel!r}", non_retryable=True)

    async def _mark(self, page: Page, status: str, error: str | None = None) -> str:
        async with self.pool.acquire() as conn:
            await notifications.mark(conn, page.id, status, error)
        return status

    async def _not_delivered(self, page: Page, error: str) -> None:
        await not_delivered(self.pool, page.id, error, self.settings.notify_attempts)

    async def _post(self, page: Page, name: str, url: str, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        try:
            response = await self.http.post(
                url, content=body, headers=headers, timeout=self.settings.notify_timeout
            )
        except httpx.HTTPError as err:
            await self._not_delivered(page, f"{type(err).__name__}: {err}")
            raise
        if response.is_success:
            return await self._mark(page, "delivered")

        error = f"{name.lower()} answered {response.status_code}"
        answer = _one_line(response.text)[:ERROR_BODY_CHARS]
        if answer:
            error += f": {answer}"
        status = response.status_code
        if 400 <= status < 500 and status != 429:
            await self._mark(page, "failed", error)
            raise ApplicationError(error, type=f"{name}Rejected", non_retryable=True)
        await self._not_delivered(page, error)
        if status == 429:
            raise ApplicationError(error, type=f"{name}RateLimited", next_retry_delay=_retry_after(response))
        raise ApplicationError(error, type=f"{name}Unavailable")

    async def _email(self, page: Page) -> str:
        if not page.recipient_email:
            error = "page has no recipient email"
            await self._mark(page, "failed", error)
            raise ApplicationError(error, type="NoRecipient", non_retryable=True)
        settings = self.settings
        try:
            await aiosmtplib.send(
                email_message(page, settings.smtp_from),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                # Explicit either way: no opportunistic STARTTLS, no login unless configured.
                start_tls=settings.smtp_starttls,
                username=settings.smtp_username or None,
                password=(settings.smtp_password or "") if settings.smtp_username else None,
                timeout=SMTP_TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            refused = err.recipients[0]
            await self._smtp_answered(page, refused.code, refused.message)
        except aiosmtplib.SMTPResponseException as err:
            await self._smtp_answered(page, err.code, err.message)
        except OSError as err:  # refused, disconnected, timed out (aiosmtplib's included), TLS errors
            await self._not_delivered(page, f"{type(err).__name__}: {err}")
            raise
        except aiosmtplib.SMTPException as err:
            # What is left is configuration the server does not support (STARTTLS or AUTH not
            # offered, SMTPUTF8 missing): no retry will change that.
            error = f"smtp: {err}"
            await self._mark(page, "failed", error)
            raise ApplicationError(error, type="EmailMisconfigured", non_retryable=True) from err
        return await self._mark(page, "delivered")

    async def _smtp_answered(self, page: Page, code: int, message: str) -> None:
        """Marks and raises for an SMTP error reply: 5xx for good, anything else to be retried."""
        error = f"smtp answered {code}: {_one_line(message)}"[: ERROR_BODY_CHARS + 24]
        if 500 <= code < 600:
            await self._mark(page, "failed", error)
            raise ApplicationError(error, type="EmailRejected", non_retryable=True)
        await self._not_delivered(page, error)
        raise ApplicationError(error, type="EmailUnavailable")
