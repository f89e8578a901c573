"""SQL for ticket embeddings, possible duplicates, and problem records (repeat issues)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from db.kb import vector_literal
from domain.problems import Problem, ProblemTicket, SimilarPair

OPEN = ("new", "queued", "open", "pending_customer")


# --- ticket embeddings and duplicates -----------------------------------------------------------


async def save_ticket_embedding(
    conn: asyncpg.Connection,
    ticket_id: int,
    customer_id: str,
    module: str,
    embedding: Sequence[float],
    model: str,
) -> None:
    await conn.execute(
        """INSERT INTO ticket_embeddings (ticket_id, customer_id, module, embedding, embedding_model)
           VALUES ($1, $2, $3, $4::text::vector, $5)
           ON CONFLICT (ticket_id) DO UPDATE SET module = EXCLUDED.module, embedding = EXCLUDED.embedding,
               embedding_model = EXCLUDED.embedding_model""",
        ticket_id,
        customer_id,
        module,
        vector_literal(embedding),
        model,
    )


async def link_possible_duplicates(
    conn: asyncpg.Connection, ticket_id: int, min_similarity: float, limit: int = 5
) -> list[tuple[int, float]]:
    """Open tickets of the same customer whose text is this close; links them both ways."""
    rows = await conn.fetch(
        """SELECT o.ticket_id, 1 - (o.embedding <=> me.embedding) AS similarity
           FROM ticket_embeddings me
           JOIN ticket_embeddings o ON o.customer_id = me.customer_id AND o.ticket_id <> me.ticket_id
                                   AND o.embedding_model = me.embedding_model
           JOIN tickets t ON t.id = o.ticket_id
           WHERE me.ticket_id = $1 AND t.status = ANY($2::text[])
             AND 1 - (o.embedding <=> me.embedding) >= $3
           ORDER BY similarity DESC, o.ticket_id LIMIT $4""",
        ticket_id,
        list(OPEN),
        min_similarity,
        limit,
    )
    found = [(r["ticket_id"], float(r["similarity"])) for r in rows]
    if found:
        await conn.executemany(
            """INSERT INTO ticket_links (ticket_id, linked_ticket_id, kind, similarity)
               VALUES ($1, $2, 'possible_duplicate', $3) ON CONFLICT DO NOTHING""",
            [args for other, sim in found for args in ((ticket_id, other, sim), (other, ticket_id, sim))],
        )
    return found


async def linked_tickets(conn: asyncpg.Connection, ticket_id: int) -> list[dict]:
    rows = await conn.fetch(
        """SELECT l.linked_ticket_id AS ticket_id, l.kind, l.similarity, t.subject, t.status
           FROM ticket_links l JOIN tickets t ON t.id = l.linked_ticket_id
           WHERE l.ticket_id = $1 ORDER BY l.similarity DESC""",
        ticket_id,
    )
    return [dict(r) for r in rows]


# --- repeat issues ------------------------------------------------------------------------------


async def similar_resolved_pairs(
    conn: asyncpg.Connection, since: datetime, min_similarity: float
) -> dict[str, list[SimilarPair]]:
    """Pairs of tickets resolved since `since`, not yet in a problem, by module."""
    rows = await conn.fetch(
        """WITH recent AS (
               SELECT e.* FROM ticket_embeddings e JOIN tickets t ON t.id = e.ticket_id
               WHERE t.resolved_at >= $1 AND t.status IN ('resolved', 'closed')
                 AND NOT EXISTS (SELECT 1 FROM problem_tickets p WHERE p.ticket_id = e.ticket_id))
           SELECT a.module, a.ticket_id AS a, b.ticket_id AS b,
                  1 - (a.embedding <=> b.embedding) AS similarity
           FROM recent a JOIN recent b
             ON a.module = b.module AND a.ticket_id < b.ticket_id AND a.embedding_model = b.embedding_model
           WHERE 1 - (a.embedding <=> b.embedding) >= $2""",
        since,
        min_similarity,
    )
    pairs: dict[str, list[SimilarPair]] = {}
    for r in rows:
        pairs.setdefault(r["module"], []).append(
            SimilarPair(a=r["a"], b=r["b"], similarity=float(r["similarity"]))
        )
    return pairs


async def problem_tickets(conn: asyncpg.Connection, ticket_ids: list[int]) -> dict[int, dict]:
    rows = await conn.fetch(
        """SELECT t.id, t.subject, t.customer_id, t.resolved_at, c.name AS customer_name
           FROM tickets t JOIN customers c ON c.id = t.customer_id WHERE t.id = ANY($1::bigint[])""",
        ticket_ids,
    )
    return {r["id"]: dict(r) for r in rows}


async def create_problem(
    conn: asyncpg.Connection, module: str, title: str, summary: str, members: list[tuple[int, float]]
) -> int | None:
    """The problem with its tickets, or None when another run already took one of them."""
    try:
        async with conn.transaction():
            problem_id = await conn.fetchval(
                "INSERT INTO problems (module, title, summary) VALUES ($1, $2, $3) RETURNING id",
                module,
                title,
                summary,
            )
            await conn.executemany(
                "INSERT INTO problem_tickets (problem_id, ticket_id, similarity) VALUES ($1, $2, $3)",
                [(problem_id, ticket_id, similarity) for ticket_id, similarity in members],
            )
    except asyncpg.UniqueViolationError:
        return None
    return problem_id


async def get_problem(conn: asyncpg.Connection, problem_id: int) -> Problem | None:
    row = await conn.fetchrow("SELECT * FROM problems WHERE id = $1", problem_id)
    if row is None:
        return None
    tickets = await conn.fetch(
        """SELECT p.ticket_id, p.similarity, t.subject, t.customer_id, t.resolved_at
           FROM problem_tickets p JOIN tickets t ON t.id = p.ticket_id
           WHERE p.problem_id = $1 ORDER BY p.similarity DESC, p.ticket_id""",
        problem_id,
    )
    return Problem(**dict(row), tickets=[ProblemTicket(**dict(t)) for t in tickets])


async def list_problems(
    conn: asyncpg.Connection, status: str | None = None, limit: int = 100
) -> list[Problem]:
    rows = await conn.fetch(
        "SELECT id FROM problems WHERE $1::text IS NULL OR status = $1 ORDER BY id DESC LIMIT $2",
        status,
        limit,
    )
    return [p for r in rows if (p := await get_problem(conn, r["id"])) is not None]


async def unsent_problems(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT id FROM problems WHERE status = 'open' ORDER BY id")
    return [r["id"] for r in rows]


async def mark_sent(conn: asyncpg.Connection, problem_id: int, key: str, url: str | None) -> None:
    await conn.execute(
        """UPDATE problems SET status = 'sent', tracker_key = $2, tracker_url = $3, sent_at = now(),
                               last_error = NULL
           WHERE id = $1""",
        problem_id,
        key,
        url,
    )


async def mark_failed(conn: asyncpg.Connection, problem_id: int, error: str) -> None:
    await conn.execute("UPDATE problems SET last_error = $2 WHERE id = $1", problem_id, error[:1000])
