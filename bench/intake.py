"""Intake: N tickets POSTed through the HTTP API by C concurrent clients, each filing its next
ticket once its last one is assigned; sustained tickets/s and POST -> "assigned" latency.

"Assigned" is the moment the read model shows the ticket open (or queued) — what
`GET /v1/tickets/{id}` would return. One poller reads PostgreSQL every 20 ms for all pending
tickets (C clients polling the API every 20 ms would themselves load the 2-core machine).

The baseline: the same clients start `BareWorkflow`s doing the same activities in the same
order (triage, knowledge base, claim, then projection and notification side by side) and await
their results. Also records one ticket's whole typical life and counts its history.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench import baseline
from bench.stack import Stack, quantiles
from domain.tickets import ticket_workflow_id

TEXTS = [
    ("Invoice total is wrong", "Our October invoice is wrong"),
    ("No puedo descargar la factura", "La factura de octubre no se descarga"),
    ("動画の再生が止まる", "昨日から動画の再生が途中で止まります"),
    ("Datenbank-Backup schlägt fehl", "Das Backup bricht mit einem Timeout ab"),
]
# What a new ticket's workflow runs before it is assigned (read from a recorded history, see
# `typical_life`): triage, knowledge-base insights, the claim, then the projection and the
# "ticket assigned" notification side by side.
INTAKE_STEPS = [["triage"], ["insights"], ["claim"], ["project", "probe_notify"]]
# Lifecycle timings for the one ticket whose whole life is recorded.
LIFE_ENV = {"MERIDIAN_CSAT_DELAY": "PT2S", "MERIDIAN_REOPEN_WINDOW": "PT6S"}


def _rates(started: float, done: list[float]) -> dict[str, float]:
    done = sorted(done)
    n = len(done)
    wall = done[-1] - started
    lo, hi = done[n // 10], done[(n * 9) // 10]
    steady = (n * 8 // 10) / (hi - lo) if hi > lo else float("nan")
    return {
        "wall_seconds": round(wall, 2),
        "per_second": round(n / wall, 2),
        "steady_per_second": round(steady, 2),
    }


async def meridian_intake(stack: Stack, tickets: int, concurrency: int) -> dict[str, Any]:
    waiting: dict[int, asyncio.Future] = {}
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            if waiting:
                async with stack.pool.acquire() as conn:
                    rows = await conn.fetch(
                        "SELECT id FROM tickets WHERE id = ANY($1) AND status IN ('open', 'queued')",
                        list(waiting),
                    )
                now = time.perf_counter()
                for r in rows:
                    future = waiting.pop(r["id"], None)
                    if future is not None and not future.done():
                        future.set_result(now)
            await asyncio.sleep(0.02)

    latencies: list[float] = []
    done: list[float] = []
    errors: Counter[str] = Counter()
    queue = asyncio.Queue()
    for n in range(tickets):
        queue.put_nowait(n)

    async def client(http) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            subject, body = TEXTS[n % len(TEXTS)]
            started = time.perf_counter()
            while True:
                response = await http.post(
                    "/v1/tickets",
                    json={"customer_id": f"customer{n % 20}", "subject": subject, "body": body},
                )
                if response.status_code != 429:
                    break
                errors["429"] += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            if response.status_code != 201:
                errors[str(response.status_code)] += 1
                continue
            future = asyncio.get_running_loop().create_future()
            waiting[response.json()["id"]] = future
            finished = await future
            latencies.append(finished - started)
            done.append(finished)

    watcher = asyncio.create_task(watch())
    cpu_before = stack.rss.cpu_seconds()
    async with stack.http() as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    stop.set()
    await watcher
    cpu_after = stack.rss.cpu_seconds()
    return {
        "tickets": len(latencies),
        "errors": dict(errors),
        **_rates(started, done),
        "post_to_assigned_ms": quantiles(latencies, 1000),
        "cpu_seconds": {k: round(cpu_after[k] - cpu_before.get(k, 0), 1) for k in cpu_after},
    }


async def bare_intake(stack: Stack, tickets: int, concurrency: int, tag: str) -> dict[str, Any]:
    latencies: list[float] = []
    done: list[float] = []
    queue = asyncio.Queue()
    for n in range(tickets):
        queue.put_nowait(n)

    async def client() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            started = time.perf_counter()
            handle = await stack.bare.start_workflow(
                "BareWorkflow",
                baseline.Plan(key=f"{tag}-{n}", steps=INTAKE_STEPS),
                id=f"bare-intake-{tag}-{n}",
                task_queue=baseline.TASK_QUEUE,
            )
            await handle.result()
            finished = time.perf_counter()
            latencies.append(finished - started)
            done.append(finished)

    cpu_before = stack.rss.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    cpu_after = stack.rss.cpu_seconds()
    return {
        "workflows": len(latencies),
        "activities_per_workflow": sum(len(s) for s in INTAKE_STEPS),
        **_rates(started, done),
        "start_to_done_ms": quantiles(latencies, 1000),
        "cpu_seconds": {k: round(cpu_after[k] - cpu_before.get(k, 0), 1) for k in cpu_after},
    }


async def run(stack: Stack, tickets: int, concurrency: int) -> dict[str, Any]:
    bare = await bare_intake(stack, tickets, concurrency, f"n{tickets}")
    meridian = await meridian_intake(stack, tickets, concurrency)
    return {
        "tickets": tickets,
        "concurrency": concurrency,
        "meridian": meridian,
        "baseline": bare,
        "throughput_ratio": round(meridian["per_second"] / bare["per_second"], 2),
        "steady_throughput_ratio": round(meridian["steady_per_second"] / bare["steady_per_second"], 2),
        "target": ">= 0.6",
    }


# --- one ticket's typical life, read back from its history ----------------------------------------


async def _wait(http, ticket_id: int, check, patience: float = 60) -> dict:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        ticket = (await http.get(f"/v1/tickets/{ticket_id}")).json()
        if check(ticket):
            return ticket
        await asyncio.sleep(0.2)
    raise TimeoutError(f"ticket {ticket_id}: condition not met in {patience}s")


async def _wait_event(http, ticket_id: int, kind: str, patience: float = 60) -> None:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        events = (await http.get(f"/v1/tickets/{ticket_id}/timeline")).json()["events"]
        if any(e["kind"] == kind for e in events):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"ticket {ticket_id}: no {kind} event in {patience}s")


async def history_counts(stack: Stack, workflow_id: str) -> dict[str, Any]:
    handle = stack.client.get_workflow_handle(workflow_id)
    kinds: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    total = 0
    async for event in handle.fetch_history_events():
        total += 1
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        kinds[name] += 1
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities[event.activity_task_scheduled_event_attributes.activity_type.name] += 1
    return {
        "history_events": total,
        "activities": sum(activities.values()),
        "activities_by_type": dict(activities.most_common()),
        "timers": kinds["TIMER_STARTED"],
        "workflow_tasks": kinds["WORKFLOW_TASK_COMPLETED"],
        "events_by_type": dict(kinds.most_common()),
    }


async def typical_life(stack: Stack) -> dict[str, Any]:
    """create -> triage -> assign -> reply -> resolve -> CSAT -> close, through the API."""
    async with stack.http() as http:
        created = (
            await http.post(
                "/v1/tickets",
                json={
                    "customer_id": "customer1",
                    "subject": "Invoice total is wrong",
                    "body": "Our October invoice is wrong",
                },
            )
        ).json()
        tid = created["id"]
        assigned = await _wait(http, tid, lambda t: t["status"] == "open")
        intake = await history_counts(stack, ticket_workflow_id(tid))
        reply = await http.post(
            f"/v1/tickets/{tid}/replies", json={"agent_id": assigned["assignee_id"], "body": "Fixed"}
        )
        assert reply.status_code == 201, reply.text
        resolved = await http.post(f"/v1/tickets/{tid}/resolve", json={"resolution": "Credit note issued"})
        assert resolved.status_code == 200, resolved.text
        await _wait_event(http, tid, "csat_sent")
        rated = await http.post(f"/v1/tickets/{tid}/csat", json={"score": 5, "comment": "Quick and clear"})
        assert rated.status_code == 200, rated.text
        await _wait(http, tid, lambda t: t["status"] == "closed")
        timeline = (await http.get(f"/v1/tickets/{tid}/timeline")).json()["events"]
    await asyncio.sleep(1)
    life = await history_counts(stack, ticket_workflow_id(tid))
    async with stack.pool.acquire() as conn:
        notifications = await conn.fetchval("SELECT count(*) FROM notifications WHERE ticket_id = $1", tid)
    timeline_events = len(timeline)
    projections = life["activities_by_type"].get("project_ticket", 0)
    return {
        "ticket_id": tid,
        "intake_until_assigned": {
            k: intake[k]
            for k in ("history_events", "activities", "activities_by_type", "timers", "workflow_tasks")
        },
        "whole_life": life,
        "timeline_events": timeline_events,
        "timeline_kinds": [e["kind"] for e in timeline],
        "notifications": notifications,
        "projection_activities": projections,
        # A naive design writes each timeline event, read-model update and notification in an
        # activity of its own (3 history events each: scheduled, started, completed).
        "naive_activities": life["activities"] - projections + 2 * (timeline_events - 1),
    }  # fmt: skip
