"""Regional task queues: a region's notifications run on its own workers, with the central one as backstop."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from temporalio.api.enums.v1 import EventType

from api.app import create_app
from domain.directory import delivery_task_queue
from domain.tickets import ticket_workflow_id
from tests.conftest import Api, add_agent, add_customer, make_settings
from workers.main import build_delivery_worker, build_regional_worker, build_worker


async def scheduled_queues(client, ticket_id: int, activity: str) -> list[str]:
    handle = client.get_workflow_handle(ticket_workflow_id(ticket_id))
    return [
        e.activity_task_scheduled_event_attributes.task_queue.name
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    ]


async def recorded_notifications(pool, ticket_id: int, patience: float = 20) -> list[str]:
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT status FROM notifications WHERE ticket_id = $1", ticket_id)
        if rows and all(r["status"] == "recorded" for r in rows):
            return [r["status"] for r in rows]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"notifications of ticket {ticket_id} never delivered: {rows}")
        await asyncio.sleep(0.1)


async def file(api, customer: str) -> int:
    response = await api.http.post(
        "/v1/tickets",
        json={"customer_id": customer, "subject": "Invoice", "body": "invoice is wrong"},
        headers=api.admin,
    )
    ticket = await api.wait_for(response.json()["id"], lambda t: t["status"] == "open")
    return ticket["id"]


async def test_a_tickets_notifications_run_on_its_regions_queue(api, db):
    await add_agent(db, "kenji", region="apac")
    await add_customer(db, "sakura", region="apac")
    ticket_id = await file(api, "sakura")
    await recorded_notifications(db, ticket_id)
    queues = await scheduled_queues(api.client, ticket_id, "deliver_notification")
    assert queues and set(queues) == {f"{api.settings.task_queue}-apac"}


async def test_a_regional_worker_alone_serves_its_region(db, dev_env, shared_deps, database_url):
    settings = make_settings(database_url)
    await add_agent(db, "kenji", region="apac")
    await add_customer(db, "sakura", region="apac")
    app = create_app(settings, pool=db, client=dev_env.client)
    central = build_worker(dev_env.client, shared_deps, settings)
    apac = build_regional_worker(dev_env.client, shared_deps, settings, "apac")
    async with (
        central,
        apac,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://meridian.test") as http,
    ):
        api = Api(http, settings, dev_env.client)
        ticket_id = await file(api, "sakura")
        await recorded_notifications(db, ticket_id)
    assert set(await scheduled_queues(dev_env.client, ticket_id, "deliver_notification")) == {
        f"{settings.task_queue}-apac"
    }


async def test_without_a_regional_worker_the_central_worker_takes_over(
    db, dev_env, shared_deps, database_url
):
    settings = make_settings(database_url, regional_pickup_timeout=timedelta(seconds=1))
    await add_agent(db, "kenji", region="apac")
    await add_customer(db, "sakura", region="apac")
    app = create_app(settings, pool=db, client=dev_env.client)
    deliveries = delivery_task_queue(settings.task_queue)
    async with (
        build_worker(dev_env.client, shared_deps, settings),
        build_delivery_worker(dev_env.client, shared_deps, settings, deliveries),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://meridian.test") as http,
    ):
        api = Api(http, settings, dev_env.client)
        ticket_id = await file(api, "sakura")
        await recorded_notifications(db, ticket_id)
    queues = await scheduled_queues(dev_env.client, ticket_id, "deliver_notification")
    # On the central worker's delivery queue: its own slots, never those of ticket lifecycles.
    assert queues == [f"{settings.task_queue}-apac", deliveries]
