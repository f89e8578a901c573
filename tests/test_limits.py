"""Request body size (413) and rate limits (429 + Retry-After), on the real app and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from api.auth import new_token
from api.limits import RateLimits
from db import directory
from domain.enums import Role
from domain.ratelimit import Buckets, Rate, parse_rate, retry_after_header
from meridian.settings import Settings
from tests.conftest import ADMIN_TOKEN, add_agent, add_customer, make_settings


class Clock:
    """The rate limits' clock, moved only by the test: a busy machine's slow requests refill no bucket."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def app_client(
    db,
    dev_env,
    database_url: str,
    client_address: str = "203.0.113.7",
    clock: Clock | None = None,
    **overrides,
) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    """The app without a worker: enough for everything refused before a workflow is asked."""
    app = create_app(make_settings(database_url, **overrides), pool=db, client=dev_env.client)
    if clock is not None:
        limits = next(m for m in app.user_middleware if m.cls is RateLimits)
        limits.kwargs["clock"] = clock
    transport = httpx.ASGITransport(app=app, client=(client_address, 40_000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://meridian.test") as http,
    ):
        yield http, app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin() -> dict[str, str]:
    return bearer(ADMIN_TOKEN)


async def token_for(db, role: Role, subject_id: str | None, scopes: list[str] | None = None) -> str:
    """A token as `POST /v1/tokens` makes one, stored straight in the directory."""
    token = new_token(role.value[:3])
    async with db.acquire() as conn:
        await directory.store_token(conn, token, role, subject_id, label="test", scopes=scopes)
    return token


async def ticket_count(db) -> int:
    async with db.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM tickets")


# --- the pure parts ---------------------------------------------------------------------------------


def test_rates_are_read_from_settings_notation():
    assert parse_rate("120/minute") == Rate(120, 60.0)
    assert parse_rate("10/30 seconds") == Rate(10, 30.0)
    assert parse_rate("5 per second") == Rate(5, 1.0)
    assert parse_rate("OFF") is None
    for bad in ["", "fast", "0/minute", "10/0 seconds", "-1/second", "10/fortnight"]:
        with pytest.raises(ValueError, match="rate limit looks like"):
            parse_rate(bad)
    with pytest.raises(ValueError):
        Settings(rate_limit_per_token="lots")


def test_a_bucket_allows_its_burst_then_says_exactly_when_to_retry():
    buckets = Buckets(Rate(3, 60.0))  # one token every 20 s
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(20.0)
    assert buckets.take("a", 5.0) == pytest.approx(15.0)  # a refused request spends nothing
    assert buckets.take("b", 5.0) == 0.0  # other keys are unaffected
    assert buckets.take("a", 20.0) == 0.0 and buckets.take("a", 20.0) > 0
    assert retry_after_header(0.01) == "1" and retry_after_header(14.2) == "15"


def test_refilled_buckets_are_forgotten_so_memory_stays_bounded():
    buckets = Buckets(Rate(2, 10.0), prune_every=100)
    for n in range(99):
        buckets.take(f"client-{n}", 0.0)
    assert len(buckets) == 99
    buckets.take("late", 10.0)  # the 100th take prunes everything idle for a whole period
    assert len(buckets) == 1


# --- body size --------------------------------------------------------------------------------------


async def test_an_oversized_body_is_refused_before_it_is_read(db, dev_env, database_url):
    await add_customer(db, "acme")
    async with app_client(db, dev_env, database_url, max_body_bytes=4096) as (http, _):
        before = await ticket_count(db)
        body = {"customer_id": "acme", "subject": "big", "body": "x" * 5000}
        response = await http.post("/v1/tickets", json=body, headers=admin())
        assert response.status_code == 413, response.text
        assert "larger than 4096 bytes" in response.json()["detail"]

        # The same without Content-Length: a chunked upload is counted as it arrives.
        async def chunks():
            for _ in range(10):
                yield b"x" * 1000

        response = await http.post(
            "/v1/tickets", content=chunks(), headers={**admin(), "Content-Type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert (await ticket_count(db)) == before

        # Within the limit, chunked or not, the endpoint sees the whole body.
        async def small():
            yield b'{"customer_id": "acme", '
            yield b'"subject": 7}'

        response = await http.post(
            "/v1/tickets", content=small(), headers={**admin(), "Content-Type": "application/json"}
        )
        assert response.status_code == 422 and "subject" in response.text
        response = await http.post("/v1/glossary", content=b"{" * 4096, headers=admin())
        assert response.status_code == 422  # exactly the limit is allowed; it is just bad JSON


# --- rate limits ------------------------------------------------------------------------------------


async def test_a_burst_from_one_token_gets_429_and_other_tokens_carry_on(db, dev_env, database_url):
    await add_agent(db, "alice")
    await add_customer(db, "acme")
    alice = await token_for(db, Role.AGENT, "alice")
    overrides = {"rate_limit_per_token": "5/minute", "clock": Clock()}
    async with app_client(db, dev_env, database_url, **overrides) as (http, _):
        customer = bearer(await token_for(db, Role.CUSTOMER, "acme"))
        answers = [await http.get("/v1/tickets", headers=customer) for _ in range(6)]
        assert [r.status_code for r in answers] == [200] * 5 + [429]
        refused = answers[-1]
        assert refused.headers["Retry-After"] == "12"  # one request per 12 s comes back
        assert "too many requests from this token" in refused.json()["detail"]

        # Neither another token nor the admin token (limited apart, off by default) is touched.
        assert (await http.get("/v1/tickets", headers=bearer(alice))).status_code == 200
        for _ in range(10):
            assert (await http.get("/v1/tickets", headers=admin())).status_code == 200
        # Health checks and metrics are not under /v1 and never limited.
        assert (await http.get("/healthz")).status_code == 200


async def test_a_throttled_token_gets_through_after_retry_after(db, dev_env, database_url):
    await add_customer(db, "acme")
    clock = Clock()
    overrides = {"rate_limit_per_token": "2/second", "rate_limit_admin": "3/minute", "clock": clock}
    async with app_client(db, dev_env, database_url, **overrides) as (http, _):
        answers = [(await http.get("/v1/regions", headers=admin())).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]  # the admin token's own limit, when one is set
        async with httpx.AsyncClient(
            transport=http._transport, base_url="http://meridian.test"
        ) as other_client:  # the same app: the bucket is the token's, whoever sends it
            refused = await other_client.get("/v1/regions", headers=admin())
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 20
        customer = bearer(await token_for(db, Role.CUSTOMER, "acme"))
        statuses = [(await http.get("/v1/tickets", headers=customer)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await http.get("/v1/tickets", headers=customer)).headers["Retry-After"] == "1"
        clock.advance(0.5)  # half a second brings one token back
        assert (await http.get("/v1/tickets", headers=customer)).status_code == 200


async def test_survey_links_are_limited_per_address_and_per_link(db, dev_env, database_url):
    link = "/v1/surveys/" + "a" * 20 + "." + "b" * 20  # well formed, badly signed: 403 until limited
    other = "/v1/surveys/" + "c" * 20 + "." + "d" * 20
    overrides = {"rate_limit_per_survey": "3/minute", "rate_limit_per_ip": "5/minute", "clock": Clock()}
    async with app_client(db, dev_env, database_url, **overrides) as (http, app):
        statuses = [(await http.get(link)).status_code for _ in range(4)]
        assert statuses == [403, 403, 403, 429]  # the link's own limit, whatever the address
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 40_000)),
            base_url="http://meridian.test",
        ) as elsewhere:
            refused = await elsewhere.post(link, json={"score": 5})
            assert refused.status_code == 429 and "this survey link" in refused.json()["detail"]
            assert int(refused.headers["Retry-After"]) == 20
            assert (await elsewhere.get(other)).status_code == 403  # another link is fine
        # The first address has made 4 requests (5 allowed); its next to another link is its last.
        assert (await http.get(other)).status_code == 403
        refused = await http.get(other)
        assert refused.status_code == 429 and "your address" in refused.json()["detail"]
        # Not logged in at all counts against the address too.
        assert (await http.get("/v1/tickets")).status_code == 429


async def test_a_bearer_header_buys_a_survey_link_no_fresh_bucket(db, dev_env, database_url):
    """Survey endpoints ignore bearer tokens, so a made-up one per request must not dodge the link's
    and the address's limits; and a token that is not ASCII is a 401 like any unknown one, not a 500."""
    link = "/v1/surveys/" + "a" * 20 + "." + "b" * 20
    overrides = {"rate_limit_per_survey": "3/minute", "rate_limit_per_ip": "5/minute", "clock": Clock()}
    async with app_client(db, dev_env, database_url, **overrides) as (http, _):
        statuses = [(await http.get(link, headers=bearer(new_token("fake")))).status_code for _ in range(4)]
        assert statuses == [403, 403, 403, 429]
        odd = {"Authorization": "Bearer caf\u00e9-token".encode("latin-1")}
        assert (await http.get("/v1/tickets", headers=odd)).status_code == 401
        assert (await http.get("/v1/tickets", headers={"Authorization": b"Bearer \xff"})).status_code == 401


async def test_a_second_authorization_header_does_not_name_another_bucket(db, dev_env, database_url):
    """The endpoint authenticates the first Authorization header; the limit must count that one
    too, not a made-up token sent after it in a second header."""
    await add_customer(db, "acme")
    overrides = {"rate_limit_per_token": "3/minute", "clock": Clock()}
    async with app_client(db, dev_env, database_url, **overrides) as (http, _):
        token = await token_for(db, Role.CUSTOMER, "acme")
        statuses = []
        for _ in range(4):
            headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {new_token('x')}")]
            statuses.append((await http.get("/v1/tickets", headers=headers)).status_code)
        assert statuses == [200, 200, 200, 429]


async def test_made_up_tokens_count_against_their_address(db, dev_env, database_url):
    """Each unknown token would otherwise get a fresh bucket and cost a database lookup: refused
    tokens spend the address's allowance, and a real token from elsewhere is unaffected."""
    await add_customer(db, "acme")
    token = await token_for(db, Role.CUSTOMER, "acme")
    clock = Clock()
    overrides = {"rate_limit_per_ip": "3/minute", "rate_limit_per_token": "100/minute", "clock": clock}
    async with app_client(db, dev_env, database_url, **overrides) as (http, app):
        statuses = [
            (await http.get("/v1/tickets", headers=bearer(new_token("fake")))).status_code for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        # Even a real token from that address waits now: the address has been guessing.
        refused = await http.get("/v1/tickets", headers=bearer(token))
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 20
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 40_000)),
            base_url="http://meridian.test",
        ) as elsewhere:
            assert (await elsewhere.get("/v1/tickets", headers=bearer(token))).status_code == 200
        clock.advance(20)
        assert (await http.get("/v1/tickets", headers=bearer(token))).status_code == 200
        # Successful requests spend nothing of the address's refused-token allowance.
        for _ in range(5):
            assert (await http.get("/v1/tickets", headers=bearer(token))).status_code == 200
