"""PostgreSQL goes away (stopped as in a crash) and comes back: the API's answers meanwhile, and a
30 s outage while tickets flow (activities retry with backoff, everything catches up)."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from db.pool import create_pool
from tests.conftest import ADMIN_TOKEN, make_settings, saved_ticket
from tests.faults.harness import LONG_STREAM, crash_postgres, fresh_database, seed_directory

# Every kind of route that needs the database: reads, a ticket, a directory write, tokens.
ROUTES = [
    ("GET", "/v1/tickets", None),
    ("GET", "/v1/tickets/1", None),
    ("GET", "/v1/tickets/1/timeline", None),
    ("POST", "/v1/tickets", {"customer_id": "acme", "subject": "Export fails", "body": "Since today."}),
    ("POST", "/v1/tickets/1/replies", {"agent_id": "ana", "body": "Looking into it."}),
    ("POST", "/v1/tickets/1/resolve", {"resolution": "fixed"}),
    ("PUT", "/v1/customers/acme", {"name": "Acme", "tier": "business", "language": "en"}),
    ("GET", "/v1/agents", None),
    ("POST", "/v1/tokens", {"role": "agent", "subject_id": "ana"}),
]


async def test_the_api_answers_503_with_retry_after_while_postgresql_is_down(crashable_postgres, dev_env):
    """Each route, while PostgreSQL is down: 503, Retry-After, a reason, never a 500; and the same
    routes work again once it is back (the pool reconnects by itself)."""
    url = await fresh_database(crashable_postgres.admin_url)
    await seed_directory(url)
    pool = await create_pool(url)
    app = create_app(make_settings(url), pool=pool, client=dev_env.client)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://meridian.test"
            ) as http,
        ):
            # Saved as the API saves it, with no workflow: the shared dev server must not get a
            # `ticket-1` that a later test's ticket 1 would join.
            await saved_ticket(pool, "acme")
            crashable_postgres.crash()
            try:
                down = {}
                for method, path, body in ROUTES:
                    response = await http.request(method, path, json=body, headers=headers)
                    down[f"{method} {path}"] = response
                health = await http.get("/healthz")
            finally:
                crashable_postgres.start()
            back = [await http.request(m, p, json=b, headers=headers) for m, p, b in ROUTES[:3] + ROUTES[6:8]]
        async with pool.acquire() as conn:
            tickets, events = await conn.fetchrow(
                "SELECT count(*), (SELECT count(*) FROM ticket_events) FROM tickets"
            )
    finally:
        await pool.close()

    for route, response in down.items():
        assert response.status_code == 503, (route, response.status_code, response.text)
        assert response.headers["Retry-After"] == "5", route
        assert "database is unavailable" in response.json()["detail"], route
    assert health.status_code == 503 and health.json()["database"].startswith("error")
    assert [r.status_code for r in back] == [200] * 5, [r.text for r in back]
    # The refused POST /tickets left nothing behind, not even half: one ticket, its one event.
    assert (tickets, events) == (1, 1)


def activities_retried(checked: dict) -> None:
    assert checked["activity_attempts_failed_and_retried"] > 0, "no activity met the outage"


@pytest.mark.slow
async def test_postgresql_down_for_30_seconds_under_a_stream_of_120_tickets(scenario, crashable_postgres):
    await scenario(
        "PostgreSQL crashed for 30 s and restarted",
        faults=[(15.0, crash_postgres(crashable_postgres, 30.0))],
        expect=activities_retried,
        **LONG_STREAM,
    )
