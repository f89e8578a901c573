"""Delivers notifications to the configured webhook, signed with HMAC-SHA256, and logs each one."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import asyncpg
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import notifications
from domain.notifications import Notification

SIGNATURE_HEADER = "X-Meridian-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def last_attempt(attempts: int) -> int | None:
    """On the delivery's last attempt, how many it had: the worker's `notify_attempts` or the retry
    policy's maximum, whichever comes first. None while Temporal will try again."""
    info = activity.info()
    limit = attempts
    if info.retry_policy is not None and info.retry_policy.maximum_attempts > 0:
        limit = min(limit, info.retry_policy.maximum_attempts)
    return info.attempt if info.attempt >= limit else None


async def not_delivered(pool: asyncpg.Pool, notification_id: str, error: str, attempts: int) -> None:
    """A failure worth retrying (5xx, 429, timeout, refused connection): the row stays 'pending' while
    Temporal retries; on the last attempt it becomes 'failed' for good, which the undelivered gauge
    and the ticket's `notification_failed` event report, and nothing retries it any more."""
    given_up = last_attempt(attempts)
    status = "pending" if given_up is None else "failed"
    if given_up is not None:
        error = f"{error} (gave up after {given_up} attempts)"
    async with pool.acquire() as conn:
        await notifications.mark(conn, notification_id, status, error)
    if given_up is not None:
        raise ApplicationError(error, type="DeliveryGaveUp", non_retryable=True)


class NotificationActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        webhook_url: str | None,
        secret: str | None,
        *,
        timeout: float = 10.0,
        attempts: int = 10,
    ):
        self.pool = pool
        self.http = http
        self.webhook_url = webhook_url
        self.secret = secret
        self.timeout = timeout  # seconds one POST may take: a receiver that hangs is a failed attempt
        self.attempts = attempts

    @activity.defn(name="deliver_notification")
    async def deliver_notification(self, notification: Notification) -> str:
        async with self.pool.acquire() as conn:
            status = await notifications.record(conn, notification)
        if status in ("delivered", "recorded"):
            return status
        if not self.webhook_url:
            # No channel configured: the notification log is the delivery.
            async with self.pool.acquire() as conn:
                await notifications.mark(conn, notification.id, "recorded")
            return "recorded"

        body = json.dumps(notification.model_dump(mode="json"), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Meridian-Event": notification.kind,
            "X-Meridian-Delivery": notification.id,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        try:
            response = await self.http.post(
                self.webhook_url, content=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as err:
            await not_delivered(self.pool, notification.id, f"{type(err).__name__}: {err}", self.attempts)
            raise
        if response.is_success:
            async with self.pool.acquire() as conn:
                await notifications.mark(conn, notification.id, "delivered")
            return "delivered"
        error = f"webhook answered {response.status_code}"
        if 400 <= response.status_code < 500 and response.status_code != 429:
            async with self.pool.acquire() as conn:
                await notifications.mark(conn, notification.id, "failed", error)
            raise ApplicationError(error, type="WebhookRejected", non_retryable=True)
        await not_delivered(self.pool, notification.id, error, self.attempts)
        if response.status_code == 429:
            retry_after = response.headers.get("Retry-After", "")
            seconds = int(retry_after) if retry_after.isascii() and retry_after.isdigit() else None
            raise ApplicationError(
                error,
                type="WebhookRateLimited",
                next_retry_delay=timedelta(seconds=seconds) if seconds is not None else None,
            )
        raise ApplicationError(error, type="WebhookUnavailable")
