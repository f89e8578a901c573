"""/metrics: what Prometheus scrapes from the API and the worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.enums import ActorType
from domain.tickets import Actor, TicketInput
from meridian.temporal import start_ticket_workflow
from tests.conftest import add_agent, add_customer, free_port, make_settings, running_worker, saved_ticket
from workers.main import metrics_runtime


async def test_the_api_counts_requests_and_created_tickets(api):
    await add_customer(api.http._transport.app.state.pool, "acme")
    await api.http.post(
        "/v1/tickets", json={"customer_id": "acme", "subject": "s", "body": "b"}, headers=api.admin
    )
    await api.http.get("/v1/tickets/424242", headers=api.admin)
    text = (await api.http.get("/metrics")).text
    assert 'meridian_tickets_created_total{channel="api"} 1.0' in text
    assert (
        'meridian_api_requests_total{method="GET",route="/v1/tickets/{ticket_id}",status="404"} 1.0' in text
    )
    open_counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("meridian_open_tickets{")
    ]
    assert sum(open_counts) == 1.0  # the ticket just filed, whatever stage triage has reached


async def test_the_worker_exports_ticket_events_and_sdk_metrics(db, dev_env, shared_deps, database_url):
    port = free_port()
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        data_converter=pydantic_data_converter,
        runtime=metrics_runtime(f"127.0.0.1:{port}"),
    )
    settings = make_settings(database_url)
    await add_agent(db, "alice")
    await add_customer(db, "acme")
    async with running_worker(client, shared_deps, settings):
        now = datetime.now(UTC)
        row = await saved_ticket(
            db,
            "acme",
            subject="Invoice",
            body="invoice wrong",
            created_at=now,
            actor=Actor(type=ActorType.CUSTOMER, id="acme"),
        )
        await start_ticket_workflow(
            client,
            settings.task_queue,
            TicketInput(
                ticket_id=row["id"],
                customer_id="acme",
                subject="Invoice",
                body="invoice wrong",
                created_at=now,
                lifecycle=settings.lifecycle(),
            ),
        )
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                if 'kind="assigned"' in text:
                    break
                await asyncio.sleep(0.1)
    assert 'meridian_ticket_events{kind="assigned"' in text or 'kind="assigned"' in text
    assert 'priority="P3"' in text and 'region="emea"' in text
    assert "temporal_workflow_task_execution_latency" in text or "temporal_request" in text
