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


class NotificationActivities:
    def __init__(
        self, pool: asyncpg.Pool, http: httpx.AsyncClient, webhook_url: str | None, secret: str | None
    ):
        self.pool = pool
        self.http = http
        self.webhook_url = webhook_url
        self.secret = secret

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
            response = await self.http.post(self.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as err:
            await self._failed(notification, f"{type(err).__name__}: {err}")
            raise
        if response.is_success:
            async with self.pool.acquire() as conn:
                await notifications.mark(conn, notification.id, "delivered")
            return "delivered"
        error = f"webhook answered {response.status_code}"
        rejected = 400 <= response.status_code < 500 and response.status_code != 429
        async with self.pool.acquire() as conn:
            await notifications.mark(conn, notification.id, "failed" if rejected else "pending", error)
        if rejected:
            raise ApplicationError(error, type="WebhookRejected", non_retryable=True)
        if response.status_code == 429:
            retry_after = response.headers.get("Retry-After", "")
            seconds = int(retry_after) if retry_after.isascii() and retry_after.isdigit() else None
            raise ApplicationError(
                error,
                type="WebhookRateLimited",
                next_retry_delay=timedelta(seconds=seconds) if seconds is not None else None,
            )
        raise ApplicationError(error, type="WebhookUnavailable")

    async def _failed(self, notification: Notification, error: str) -> None:
        async with self.pool.acquire() as conn:
            await notifications.mark(conn, notification.id, "pending", error)
