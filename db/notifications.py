"""SQL for the notification log: every notification is recorded, delivered or not."""

from __future__ import annotations

import uuid

import asyncpg

from domain.notifications import Notification


async def record(conn: asyncpg.Connection, notification: Notification) -> str:
    """Insert once; returns the stored status (a retry of a delivered notification sees 'delivered')."""
    await conn.execute(
        """INSERT INTO notifications (id, ticket_id, kind, recipient_type, recipient_id, payload, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING""",
        uuid.UUID(notification.id),
        notification.ticket_id,
        notification.kind,
        notification.recipient_type,
        notification.recipient_id,
        notification.model_dump(mode="json"),
        notification.at,
    )
    return await conn.fetchval("SELECT status FROM notifications WHERE id = $1", uuid.UUID(notification.id))


async def mark(conn: asyncpg.Connection, notification_id: str, status: str, error: str | None = None) -> None:
    await conn.execute(
        """UPDATE notifications SET status = $2, attempts = attempts + 1, last_error = $3,
               delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
           WHERE id = $1""",
        uuid.UUID(notification_id),
        status,
        error,
    )


async def for_ticket(conn: asyncpg.Connection, ticket_id: int) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM notifications WHERE ticket_id = $1 ORDER BY created_at", ticket_id)
