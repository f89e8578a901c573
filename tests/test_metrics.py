"""/metrics: what Prometheus scrapes from the API and the worker."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.translation import TranslationActivities, Translator
from api.app import create_app
from api.metrics import SRE_EVENTS
from domain.enums import ActorType, CustomerTier, LanguageLevel
from domain.tickets import Actor, TicketInput
from domain.translation import TranslationRequest
from meridian.temporal import start_ticket_workflow
from tests.conftest import (
    Api,
    add_agent,
    add_customer,
    free_port,
    make_settings,
    open_api,
    running_worker,
    saved_ticket,
)
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


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The values of one metric in an exposition, keyed by their label pairs."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series))
            found[labels] = float(value)
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for k, v in samples(text, name).items() if wanted <= k)


async def test_the_api_reports_queue_depth_and_age_and_undelivered_notifications(
    db, dev_env, shared_deps, database_url, closed_port
):
    settings = make_settings(database_url, webhook_url=f"http://127.0.0.1:{closed_port}/hooks")
    await add_agent(db, "alice", capacity=1)
    await add_customer(db, "acme")
    async with open_api(db, dev_env, shared_deps, settings) as api:

        async def file(subject: str) -> int:
            answer = await api.http.post(
                "/v1/tickets",
                json={"customer_id": "acme", "subject": subject, "body": subject},
                headers=api.admin,
            )
            return answer.json()["id"]

        # One after the other: the first takes alice's only slot, the second has to queue.
        await api.wait_for(await file("Invoice wrong"), lambda t: t["status"] == "open")
        await api.wait_for(await file("Invoice missing"), lambda t: t["status"] == "queued")
        await asyncio.sleep(1.1)  # ages count whole seconds of the database clock
        text = (await api.http.get("/metrics")).text

    assert value(text, "meridian_queue_depth", region="emea", priority="P3") == 1
    assert value(text, "meridian_queue_oldest_seconds", region="emea", priority="P3") >= 1
    # Every region and priority is there, empty ones at 0, so alerts and panels never miss a series.
    depths = samples(text, "meridian_queue_depth")
    assert len(depths) == 3 * 4 and sum(depths.values()) == 1
    # alice's assignment notice cannot reach the webhook: it stays pending while Temporal retries it.
    assert value(text, "meridian_notifications_undelivered", channel="webhook", status="pending") >= 1
    assert value(text, "meridian_notifications_undelivered", status="failed") == 0
    assert value(text, "meridian_notification_pending_oldest_seconds", channel="webhook") >= 1
    assert value(text, "meridian_notification_pending_oldest_seconds", channel="pagerduty") == 0


class BusyDesk:
    """A desk with trouble on the time-skipping server, its worker exporting through its own Runtime.

    A P1 outage queued with nobody to take it breaches and escalates; the webhook refuses
    connections, so every notification fails and retries; a Spanish ticket is given to an
    English-only agent, so a customer message goes through translate_text. The API runs beside it
    on the same database.
    """

    def __init__(self, api: Api, worker_port: int):
        self.api = api
        self.worker_port = worker_port
        self.outage = 0

    async def api_metrics(self) -> str:
        return (await self.api.http.get("/metrics")).text

    async def worker_metrics(self, until: str = "", patience: float = 10.0) -> str:
        deadline = asyncio.get_running_loop().time() + patience
        async with httpx.AsyncClient(trust_env=False) as http:
            while True:
                text = (await http.get(f"http://127.0.0.1:{self.worker_port}/metrics")).text
                if until in text or asyncio.get_running_loop().time() > deadline:
                    return text
                await asyncio.sleep(0.1)


@workflow.defn(sandboxed=False)
class BrokenWorkflow:
    """Fails its workflow task on purpose: the only way to see the SDK's task-failure metric, which an
    alert and a dashboard panel use, without breaking a real ticket."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug in workflow code")


@contextlib.asynccontextmanager
async def busy_desk(
    db, skipping_env, dev_env, deps, database_url: str, webhook_port: int
) -> AsyncIterator[BusyDesk]:
    port = free_port()
    runtime = metrics_runtime(f"127.0.0.1:{port}")
    client = await Client.connect(
        skipping_env.client.service_client.config.target_host,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    settings = make_settings(database_url, webhook_url=f"http://127.0.0.1:{webhook_port}/hooks")
    await add_customer(db, "acme", tier=CustomerTier.ENTERPRISE)  # an outage is P1; SLA around the clock
    await add_customer(db, "globex", language="es")
    app = create_app(settings, pool=db, client=skipping_env.client)
    started: list[str] = []
    try:
        async with (
            running_worker(client, deps, settings),
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://meridian.test"
            ) as http,
        ):
            api = Api(http, settings, skipping_env.client)
            desk = BusyDesk(api, port)

            async def file(customer: str, subject: str, body: str) -> int:
                answer = await http.post(
                    "/v1/tickets",
                    json={"customer_id": customer, "subject": subject, "body": body},
                    headers=api.admin,
                )
                assert answer.status_code == 201, answer.text
                started.append(f"ticket-{answer.json()['id']}")
                return answer.json()["id"]

            desk.outage = await file("acme", "Production down", "Outage for all users since 09:00")
            await api.wait_for(desk.outage, lambda t: t["status"] == "queued" and t["priority"] == "P1")
            # Only now: created through the database, ana is not offered the queued outage.
            await add_agent(db, "ana", languages={"en": LanguageLevel.NATIVE})
            spanish = await file(
                "globex", "La aplicación se cierra", "La aplicación se cierra al abrir el informe"
            )
            await api.wait_for(spanish, lambda t: t["status"] == "queued")
            answer = await http.post(
                f"/v1/tickets/{spanish}/assign", json={"agent_id": "ana"}, headers=api.admin
            )
            assert answer.status_code == 200, answer.text
            answer = await http.post(
                f"/v1/tickets/{spanish}/messages", json={"body": "¿Alguna novedad?"}, headers=api.admin
            )
            assert answer.status_code == 202, answer.text
            await desk.worker_metrics(until="meridian_translations")

            await skipping_env.sleep(timedelta(minutes=16))  # the P1's 15-minute first response breaches
            for _ in range(100):
                if value(await desk.api_metrics(), "meridian_escalations_unacknowledged", priority="P1"):
                    break
                await asyncio.sleep(0.1)

            # On the dev server: a failed workflow task keeps the time-skipping server from skipping
            # time for every test after this one, even once the workflow is terminated.
            probe_client = await Client.connect(
                dev_env.client.service_client.config.target_host, runtime=runtime
            )
            probe_queue = settings.task_queue + "-probe"
            probe = await probe_client.start_workflow(
                BrokenWorkflow.run, id=f"broken-{uuid.uuid4().hex[:8]}", task_queue=probe_queue
            )
            async with Worker(probe_client, task_queue=probe_queue, workflows=[BrokenWorkflow]):
                await desk.worker_metrics(until="temporal_workflow_task_execution_failed")
            await probe.terminate("probe done")
            yield desk
    finally:
        # Left running, the tickets would hold the shared server's clock still for the next test.
        for workflow_id in started:
            with contextlib.suppress(RPCError):
                await skipping_env.client.get_workflow_handle(workflow_id).terminate("test finished")


async def test_an_escalation_counts_as_unacknowledged_until_someone_acknowledges_it(
    db, skipping_env, dev_env, shared_deps, database_url, closed_port
):
    async with busy_desk(db, skipping_env, dev_env, shared_deps, database_url, closed_port) as desk:
        before = await desk.api_metrics()
        answer = await desk.api.http.post(
            f"/v1/tickets/{desk.outage}/escalation/ack", json={"note": "on it"}, headers=desk.api.admin
        )
        assert answer.status_code == 200, answer.text
        after = await desk.api_metrics()
        worker = await desk.worker_metrics()

    # At least: in a full run the shared server's clock can run past the 16 minutes, firing later levels.
    assert value(before, "meridian_escalations_unacknowledged", priority="P1") == 1
    assert value(after, "meridian_escalations_unacknowledged", priority="P1") == 0
    assert value(after, "meridian_timeline_events", kind="escalated", priority="P1") >= 1
    assert value(after, "meridian_timeline_events", kind="escalation_acknowledged", priority="P1") == 1
    assert value(after, "meridian_tickets_created_total", channel="api") == 2
    # The webhook refuses connections: attempts fail and Temporal retries them.
    assert value(worker, "temporal_activity_execution_failed", activity_type="deliver_notification") >= 1
    assert value(worker, "meridian_ticket_events", kind="sla_breached", priority="P1") >= 1
    assert value(worker, "meridian_translations", provider="none", outcome="untranslated") == 1


class EchoTranslator(Translator):
    name = "echo"

    def __init__(self) -> None:
        self.calls = 0

    async def translate(self, texts: list[str], source: str | None, target: str) -> list[str]:
        self.calls += 1
        return [text.upper() for text in texts]


async def test_translations_count_cache_hits_apart_from_provider_calls(db):
    buffer = MetricBuffer(10_000)
    env = ActivityEnvironment()
    env.metric_meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    translator = EchoTranslator()
    text = f"Bonjour {uuid.uuid4().hex}"  # never cached by an earlier run
    request = TranslationRequest(text=text, source="fr", target="en")
    for activities in (TranslationActivities(db, translator), TranslationActivities(db, None)):
        await env.run(activities.translate_text, request)
    await env.run(TranslationActivities(db, translator).translate_text, request)

    counted = [
        (dict(u.attributes)["provider"], dict(u.attributes)["outcome"], u.value)
        for u in buffer.retrieve_updates()
        if u.metric.name == "meridian_translations"
    ]
    assert counted == [("echo", "provider", 1), ("none", "untranslated", 1), ("echo", "cache", 1)]
    assert translator.calls == 1


async def test_timeline_events_are_counted_once_each_as_they_are_recorded(db):
    """meridian_timeline_events reads counts a trigger keeps, not the whole timeline."""
    await add_customer(db, "acme")
    row = await saved_ticket(db, "acme")
    kinds = [*SRE_EVENTS, "agent_reply", "customer_message"]
    async with db.acquire() as conn:
        await conn.execute("UPDATE tickets SET priority = 'P2' WHERE id = $1", row["id"])
        insert = """INSERT INTO ticket_events (ticket_id, seq, at, kind, actor, region)
                    VALUES ($1, $2, now(), $3, '{"type": "system"}', 'apac')
                    ON CONFLICT (ticket_id, seq) DO NOTHING"""
        for _ in range(2):  # a retried projection writes the same events again
            for seq, kind in enumerate(kinds, start=10):
                await conn.execute(insert, row["id"], seq, kind)
        counted = {
            r["kind"]: (r["region"], r["priority"], r["n"])
            for r in await conn.fetch("SELECT * FROM timeline_event_counts")
        }
    assert counted == {kind: ("apac", "P2", 1) for kind in SRE_EVENTS}
    app = create_app(make_settings("unused"), pool=db, client=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as http:
        app.state.pool = db
        text = (await http.get("/metrics")).text
    assert 'meridian_timeline_events{kind="handed_off",priority="P2",region="apac"} 1.0' in text
