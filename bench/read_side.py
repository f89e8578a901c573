"""Read side: `GET /v1/tickets` (filters, keyset pagination) over a large read model.

Rows are generated inside PostgreSQL (`generate_series`) like a year of follow-the-sun history:
most tickets closed, a few percent open, three regions, 70 agents, eight languages, P1-P4. Each
query shape is requested many times through the HTTP API with varying values, one at a time;
the plan PostgreSQL picks for it is recorded beside its latency.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench.stack import Stack, quantiles

GENERATE = """
INSERT INTO tickets (status, subject, customer_id, channel, language, language_confidence, module, priority,
                     region, assignee_id, created_at, updated_at, revision, sla_state)
SELECT status, 'Generated ticket ' || g, 'customer' || (g % 20), 'api',
       (ARRAY['en','en','en','es','ja','de','fr','pt','zh','ko'])[1 + (g * 7919) % 10], 0.9,
       (ARRAY['general','billing','video','database','api'])[1 + (g * 104729) % 5],
       (ARRAY['P1','P2','P2','P3','P3','P3','P3','P4','P4','P4'])[1 + (g * 7) % 10],
       (ARRAY['emea','apac','americas'])[1 + (g * 31) % 3],
       CASE WHEN status = 'queued' THEN NULL ELSE 'agent' || ((g * 13) % 70) END,
       created, created + interval '1 hour', 3, 'met'
FROM (
    SELECT g,
           now() - make_interval(secs => ($1::bigint - g) * (31536000.0 / $1::bigint)) AS created,
           CASE WHEN g > $1::bigint - $1::bigint / 50 THEN
                    (ARRAY['open','open','open','pending_customer','queued'])[1 + g % 5]
                WHEN g % 10 = 0 THEN 'resolved' ELSE 'closed' END AS status
    FROM generate_series(1, $1::bigint) AS g
) AS s
"""


def shapes(rng: random.Random) -> dict[str, Any]:
    """Query shape -> a function giving the next request's query parameters."""
    agent = lambda: f"agent{rng.randrange(70)}"  # noqa: E731
    region = lambda: rng.choice(["emea", "apac", "americas"])  # noqa: E731
    return {
        "all, first page": lambda: {},
        "status=open": lambda: {"status": "open"},
        "status=open&region": lambda: {"status": "open", "region": region()},
        "assignee&status=open (an agent's queue)": lambda: {"assignee": agent(), "status": "open"},
        "assignee (all of an agent's tickets)": lambda: {"assignee": agent()},
        "priority=P1&status=open": lambda: {"priority": "P1", "status": "open"},
        "status=queued&language&region (rare)": lambda: {
            "status": "queued",
            "language": rng.choice(["ko", "zh", "pt"]),
            "region": region(),
        },
        "status=closed&region&language": lambda: {
            "status": "closed",
            "region": region(),
            "language": rng.choice(["en", "ja", "de"]),
        },
    }


async def _explain(stack: Stack, params: dict[str, str]) -> dict[str, Any]:
    from db.tickets import TicketFilters

    filters = TicketFilters(
        status=params.get("status"),
        region=params.get("region"),
        assignee_id=params.get("assignee"),
        priority=params.get("priority"),
        language=params.get("language"),
    )
    where, args = ["true"], []
    for column, value in filters.model_dump(exclude_none=True, mode="json").items():
        args.append(value)
        where.append(f"{column} = ${len(args)}")
    sql = (
        f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM tickets WHERE {' AND '.join(where)} "
        "ORDER BY coalesce(priority, 'P9'), created_at, id LIMIT 51"
    )
    async with stack.pool.acquire() as conn:
        plan = (await conn.fetchval(sql, *args))[0]

    def nodes(node: dict) -> list[str]:
        label = node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
        return [label] + [n for child in node.get("Plans", []) for n in nodes(child)]

    return {"plan": " > ".join(nodes(plan["Plan"])), "execution_ms": round(plan["Execution Time"], 2)}


async def run(stack: Stack, rows: int, requests: int) -> dict[str, Any]:
    started = time.time()
    async with stack.pool.acquire() as conn:
        await conn.execute(GENERATE, rows)
        await conn.execute("ANALYZE tickets")
        count = await conn.fetchval("SELECT count(*) FROM tickets")
        by_status = dict(await conn.fetch("SELECT status, count(*) FROM tickets GROUP BY 1"))
    generated = time.time() - started
    rng = random.Random(4)
    results = []
    async with stack.http() as http:
        for name, make in shapes(rng).items():
            for _ in range(5):  # warm the connection pool and the plan
                await http.get("/v1/tickets", params=make())
            latencies = []
            for _ in range(requests):
                params = make()
                t = time.perf_counter()
                response = await http.get("/v1/tickets", params={**params, "limit": 50})
                latencies.append(time.perf_counter() - t)
                assert response.status_code == 200, response.text
            results.append({"query": name, "ms": quantiles(latencies, 1000), **await _explain(stack, make())})
        # Keyset pagination: ten pages deep into the open tickets, each page timed.
        pages = []
        for _ in range(max(1, requests // 10)):
            cursor = None
            for _ in range(10):
                params = {"status": "open", "limit": 50} | ({"cursor": cursor} if cursor else {})
                t = time.perf_counter()
                page = (await http.get("/v1/tickets", params=params)).json()
                pages.append(time.perf_counter() - t)
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        results.append({"query": "status=open, pages 1-10 by cursor", "ms": quantiles(pages, 1000)})
    return {
        "rows": count,
        "by_status": by_status,
        "generate_seconds": round(generated, 1),
        "page_size": 50,
        "queries": results,
    }
