"""SQL for the ticket read model and timeline.

The API writes a ticket's first row and first event (so an accepted ticket is never lost);
from then on only the ticket's workflow writes, through `apply_projection`.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from domain.enums import Priority, TicketStatus
from domain.tickets import Actor, ProjectionBatch, TimelineEvent


class IdempotencyConflict(Exception):
    """The same Idempotency-Key was used with a different request body."""


class TicketFilters(BaseModel):
    status: TicketStatus | None = None
    region: str | None = None
    assignee_id: str | None = None
    priority: Priority | None = None
    language: str | None = None
    customer_id: str | None = None


async def create_ticket(
    conn: asyncpg.Connection,
    *,
    customer_id: str,
    subject: str,
    body: str,
    channel: str,
    declared_priority: Priority | None,
    created_at: datetime,
    actor: Actor,
    idempotency_scope: str | None,
    idempotency_key: str | None,
    request_hash: str | None,
) -> tuple[asyncpg.Record, bool]:
    """Insert the ticket and its `created` event; return (row, created). Replays return the first row."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO tickets (status, subject, customer_id, channel, created_at, updated_at,
                                    idempotency_scope, idempotency_key, request_hash)
               VALUES ('new', $1, $2, $3, $4, $4, $5, $6, $7)
               ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING
               RETURNING *""",
            subject,
            customer_id,
            channel,
            created_at,
            idempotency_scope,
            idempotency_key,
            request_hash,
        )
        if row is None:
            existing = await conn.fetchrow(
                "SELECT * FROM tickets WHERE idempotency_scope = $1 AND idempotency_key = $2",
                idempotency_scope,
                idempotency_key,
            )
            if existing["request_hash"] != request_hash:
                raise IdempotencyConflict("this Idempotency-Key was already used for a different request")
            return existing, False
        await conn.execute(
            """INSERT INTO ticket_events (ticket_id, seq, at, kind, actor, region, internal, data)
               VALUES ($1, 1, $2, 'created', $3, NULL, false, $4)""",
            row["id"],
            created_at,
            actor.model_dump(mode="json"),
            {
                "subject": subject,
                "body": body,
                "channel": channel,
                "declared_priority": declared_priority.value if declared_priority else None,
            },
        )
        return row, True


async def first_message(conn: asyncpg.Connection, ticket_id: int) -> dict[str, Any] | None:
    return await conn.fetchval("SELECT data FROM ticket_events WHERE ticket_id = $1 AND seq = 1", ticket_id)


async def tickets_never_started(conn: asyncpg.Connection, older_than_seconds: float) -> list[asyncpg.Record]:
    """Tickets the API saved but whose workflow has not projected anything yet."""
    return await conn.fetch(
        """SELECT * FROM tickets WHERE status = 'new' AND revision = 0
           AND created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 100""",
        older_than_seconds,
    )


async def apply_projection(conn: asyncpg.Connection, batch: ProjectionBatch) -> bool:
    """Write a workflow's snapshot and new events. Older or repeated revisions change nothing."""
    s = batch.snapshot
    async with conn.transaction():
        if batch.events:
            await conn.executemany(
                """INSERT INTO ticket_events (ticket_id, seq, at, kind, actor, region, internal, data)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (ticket_id, seq) DO NOTHING""",
                [
                    (
                        s.ticket_id,
                        e.seq,
                        e.at,
                        e.kind,
                        e.actor.model_dump(mode="json"),
                        e.region,
                        e.internal,
                        json.loads(json.dumps(e.data, default=str)),
                    )
                    for e in batch.events
                ],
            )
        result = await conn.execute(
            """UPDATE tickets SET revision = $2, status = $3, language = $4, language_confidence = $5,
                   module = $6, priority = $7, region = $8, assignee_id = $9, updated_at = $10,
                   first_response_at = $11, resolved_at = $12, closed_at = $13, reopen_count = $14,
                   sla = $15, sla_state = $16, csat_score = $17, csat_comment = $18,
                   machine_translation = $19
               WHERE id = $1 AND revision < $2""",
            s.ticket_id,
            s.revision,
            s.status.value,
            s.language,
            s.language_confidence,
            s.module,
            s.priority.value if s.priority else None,
            s.region,
            s.assignee_id,
            s.updated_at,
            s.first_response_at,
            s.resolved_at,
            s.closed_at,
            s.reopen_count,
            [v.model_dump(mode="json") for v in s.sla],
            s.sla_state.value if s.sla_state else None,
            s.csat_score,
            s.csat_comment,
            s.machine_translation,
        )
        applied = result == "UPDATE 1"
        if applied and s.priority is not None:
            await conn.execute(
                "UPDATE ticket_queue SET priority = $2 WHERE ticket_id = $1", s.ticket_id, s.priority.value
            )
        return applied


async def get_ticket(conn: asyncpg.Connection, ticket_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM tickets WHERE id = $1", ticket_id)


_CURSOR_PRIORITIES = {"P1", "P2", "P3", "P4", "P9"}


def encode_cursor(row: asyncpg.Record) -> str:
    key = [row["priority"] or "P9", row["created_at"].isoformat(), row["id"]]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, datetime, int]:
    try:
        priority, created_at, ticket_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        key = str(priority), datetime.fromisoformat(created_at), int(ticket_id)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ValueError("cursor is not one this API returned") from exc
    sane_time = key[1].tzinfo is not None and 1900 <= key[1].year <= 9000
    if key[0] not in _CURSOR_PRIORITIES or not 0 < key[2] < 2**63 or not sane_time:
        raise ValueError("cursor is not one this API returned")
    return key


def like_pattern(text: str) -> str:
    """`text` anywhere, literally: LIKE's own wildcards in it match only themselves."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def list_tickets(
    conn: asyncpg.Connection,
    filters: TicketFilters,
    *,
    limit: int,
    cursor: str | None,
    subject_contains: str | None = None,
) -> tuple[list[asyncpg.Record], str | None]:
    """Tickets by priority then age, one page at a time (keyset pagination)."""
    where = ["true"]
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in filters.model_dump(exclude_none=True, mode="json").items():
        where.append(f"{column} = {arg(value)}")
    if subject_contains is not None:
        where.append(f"subject ILIKE {arg(like_pattern(subject_contains))} ESCAPE '\\'")
    if cursor is not None:
        priority, created_at, ticket_id = decode_cursor(cursor)
        after = f"({arg(priority)}, {arg(created_at)}, {arg(ticket_id)})"
        where.append(f"(coalesce(priority, 'P9'), created_at, id) > {after}")
    sql = (
        f"SELECT * FROM tickets WHERE {' AND '.join(where)} "
        f"ORDER BY coalesce(priority, 'P9'), created_at, id LIMIT {arg(limit + 1)}"
    )
    rows = await conn.fetch(sql, *args)
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def event_with_id(
    conn: asyncpg.Connection, ticket_id: int, kinds: list[str], field: str, value: str
) -> asyncpg.Record | None:
    """The first of the ticket's events of these kinds whose data carries this client-chosen id."""
    return await conn.fetchrow(
        """SELECT kind, data FROM ticket_events
           WHERE ticket_id = $1 AND kind = ANY($2::text[]) AND data->>$3 = $4 ORDER BY seq LIMIT 1""",
        ticket_id,
        kinds,
        field,
        value,
    )


async def timeline(
    conn: asyncpg.Connection, ticket_id: int, *, include_internal: bool
) -> list[TimelineEvent]:
    rows = await conn.fetch(
        """SELECT * FROM ticket_events WHERE ticket_id = $1 AND (internal = false OR $2)
           ORDER BY seq""",
        ticket_id,
        include_internal,
    )
    return [
        TimelineEvent(
            seq=r["seq"],
            at=r["at"],
            kind=r["kind"],
            actor=Actor(**r["actor"]),
            region=r["region"],
            internal=r["internal"],
            data=r["data"],
        )
        for r in rows
    ]


async def open_ticket_ids(
    conn: asyncpg.Connection, *, customer_id: str | None = None, calendar_id: str | None = None
) -> list[int]:
    """Tickets still running, optionally of one customer or of customers on one contract calendar."""
    rows = await conn.fetch(
        """SELECT t.id FROM tickets t JOIN customers c ON c.id = t.customer_id
           WHERE t.status IN ('new', 'queued', 'open', 'pending_customer')
             AND ($1::text IS NULL OR t.customer_id = $1) AND ($2::text IS NULL OR c.calendar_id = $2)
           ORDER BY t.id""",
        customer_id,
        calendar_id,
    )
    return [r["id"] for r in rows]
