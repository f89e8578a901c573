"""The notification endpoint answers 500, then hangs, while tickets flow."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from pathlib import Path

import asyncpg
import pytest
import yaml

from domain.directory import delivery_task_queue
from tests.faults.harness import (
    REPO,
    Traffic,
    audit,
    elapsed,
    running_stack,
    scrape,
    wait_for_quiet,
    wrong,
)

ATTEMPTS = 3
TIMEOUT_S = 1.0
RETRY_BACKOFF_S = [1.0, 2.0]  # NOTIFY_RETRY in workflows/ticket.py: 1 s, then doubling


def alert_expr(name: str) -> str:
    rules = yaml.safe_load(Path(REPO, "deploy/prometheus/alerts.yml").read_text())
    return next(r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)


async def test_a_failing_or_hanging_endpoint_never_blocks_a_ticket(
    postgres_admin_url, stack_dir, webhook, fault_report
):
    started = time.monotonic()
    settings = {
        "MERIDIAN_WEBHOOK_URL": webhook.url,
        "MERIDIAN_NOTIFY_TIMEOUT": str(TIMEOUT_S),
        "MERIDIAN_NOTIFY_ATTEMPTS": str(ATTEMPTS),
    }
    # Tickets of the run "error" get 500s, those of "hang" no answer: both streams flow at once.
    webhook.mode = lambda notification: "error" if "error-" in json.dumps(notification) else "hang"
    async with running_stack(stack_dir, postgres_admin_url, **settings) as stack:
        runs = {mode: Traffic(stack.url, tickets=8, rate=2.0, run=mode) for mode in ("error", "hang")}
        await asyncio.gather(*(traffic() for traffic in runs.values()))
        for traffic in runs.values():
            assert not traffic.unexpected, traffic.unexpected[:5]
        # Every ticket already lived its life; the deliveries are still being retried.
        conn = await asyncpg.connect(stack.database_url)
        try:
            pending_after_lives = await conn.fetchval(
                "SELECT count(*) FROM notifications WHERE status = 'pending'"
            )
            for traffic in runs.values():
                await wait_for_quiet(stack.database_url, traffic, within=60)
            rows = await conn.fetch(
                "SELECT id, ticket_id, kind, status, attempts, last_error FROM notifications"
            )
            failures = await conn.fetch(
                """SELECT e.ticket_id, e.at, e.data, t.resolved_at FROM ticket_events e
                   JOIN tickets t ON t.id = e.ticket_id WHERE e.kind = 'notification_failed'"""
            )
        finally:
            await conn.close()
        metrics = await scrape(stack.url)
        counts = {
            mode: await audit(stack.database_url, traffic, await stack.temporal_client())
            for mode, traffic in runs.items()
        }

    tickets = sum(len(t.ids) for t in runs.values())
    notifications = len(rows)
    attempts = webhook.attempts()
    # Retried with backoff: each delivery was POSTed ATTEMPTS times, further and further apart.
    # Never sooner than the backoff allows (timer precision aside); how far apart they came is
    # reported, as a loaded machine adds its own delays.
    gaps = [[b - a for a, b in itertools.pairwise(times)] for times in attempts.values()]
    spaced = sum(
        1
        for g in gaps
        if len(g) == ATTEMPTS - 1
        and all(gap >= wait - 0.05 for gap, wait in zip(g, RETRY_BACKOFF_S, strict=True))
    )
    # Recorded as failed: the log row, the ticket's timeline, the gauge and the alert's metric.
    failed_rows = [r for r in rows if r["status"] == "failed" and r["attempts"] == ATTEMPTS]
    timed_out = [r for r in failed_rows if "Timeout" in (r["last_error"] or "")]
    answered_500 = [r for r in failed_rows if "webhook answered 500" in (r["last_error"] or "")]
    failed_gauge = metrics[
        ("meridian_notifications_undelivered", (("channel", "webhook"), ("status", "failed")))
    ]
    failed_events = sum(v for (name, labels), v in metrics.items() if name == "meridian_timeline_events"
                        and ("kind", "notification_failed") in labels)  # fmt: skip
    # Never blocked: each ticket was resolved before its notifications were given up on.
    resolved_first = sum(1 for f in failures if f["resolved_at"] < f["at"])
    checked = {
        "tickets": tickets,
        "resolved": sum(len(t.resolved) for t in runs.values()),
        "resolved_p50_s": round(
            statistics.median(s for t in runs.values() for s in t.resolved_after.values()), 2
        ),
        "notifications": notifications,
        "deliveries_posted": sum(len(v) for v in attempts.values()),
        "pending_when_every_ticket_was_resolved": pending_after_lives,
        "deliveries_spaced_by_the_backoff": spaced,
        "mean_gaps_between_attempts_s": [
            round(statistics.mean(g[i] for g in gaps), 2) for i in range(ATTEMPTS - 1)
        ],
        "recorded_failed_after_3_attempts": len(failed_rows),
        "answered_500": len(answered_500),
        "timed_out": len(timed_out),
        "notification_failed_events": len(failures),
        "tickets_resolved_before_their_deliveries_failed": resolved_first,
        "gauge_undelivered_failed": failed_gauge,
        "metric_notification_failed_events": failed_events,
        **{
            f"{mode}_{k}": v
            for mode, c in counts.items()
            for k, v in c.items()
            if k in ("duplicate_events", "duplicate_notifications", "failed_workflows", "not_resolved")
        },
    }
    print(json.dumps(checked, indent=1, default=str))
    for mode, c in counts.items():
        assert wrong(c) == {}, (mode, wrong(c))
    assert notifications == tickets + tickets // 2  # an assignment each, a customer message every other
    assert pending_after_lives > 0, "the deliveries were over before the tickets: nothing was shown"
    assert len(attempts) == notifications and all(len(v) == ATTEMPTS for v in attempts.values())
    assert spaced == notifications
    assert len(failed_rows) == notifications
    assert len(answered_500) == notifications // 2 and len(timed_out) == notifications // 2
    assert all(f"gave up after {ATTEMPTS} attempts" in r["last_error"] for r in failed_rows)
    assert len(failures) == notifications and resolved_first == notifications
    assert failed_gauge == notifications and failed_events == notifications
    assert 'kind="notification_failed"' in alert_expr("MeridianNotificationsFailing")
    fault_report(
        "notification endpoint answers 500, then hangs",
        injected={"tickets": tickets, "webhook_500_tickets": len(runs["error"].ids),
                  "webhook_hang_tickets": len(runs["hang"].ids), "attempt_timeout_s": TIMEOUT_S},
        checked=checked,
        seconds=elapsed(started),
    )  # fmt: skip


async def delivery_attempts(stack) -> dict[str, int]:
    """Finished attempts of deliver_notification in the worker process, by the queue that ran them."""
    queue = stack.env["MERIDIAN_TASK_QUEUE"]
    samples = await scrape(f"http://{stack.env['MERIDIAN_WORKER_METRICS_ADDRESS']}")
    by_queue = {
        dict(labels)["task_queue"]: int(value)
        for (name, labels), value in samples.items()
        if name == "temporal_activity_execution_latency_count"
        and dict(labels)["activity_type"] == "deliver_notification"
    }
    return {
        "delivery_attempts_on_regional_queue": by_queue.get(f"{queue}-emea", 0),
        "delivery_attempts_fallen_back_to_delivery_queue": by_queue.get(delivery_task_queue(queue), 0),
        "delivery_attempts_on_the_tickets_queue": by_queue.get(queue, 0),
    }


def tickets_not_held_up(checked: dict) -> None:
    assert checked["assigned_max_s"] < 15, checked
    assert checked["delivery_attempts_on_the_tickets_queue"] == 0, "deliveries took the tickets' slots"
    assert checked["delivery_attempts_fallen_back_to_delivery_queue"] > 0, "the regional queue kept up"


@pytest.mark.slow
async def test_a_receiver_that_hangs_under_volume_takes_no_slot_of_the_tickets(scenario, webhook):
    """Every delivery hangs for its whole timeout, more of them than the regional worker has slots:
    they queue, fall back to the central worker after the pickup timeout, and fill its delivery
    queue's slots. The slots ticket lifecycles use (here 40) stay free: tickets are assigned,
    answered and resolved as fast as without the fault."""
    webhook.mode = "hang"
    await scenario(
        "notification endpoint hangs under volume (10 delivery slots per queue, 40 for tickets)",
        tickets=90,
        rate=2.0,
        faults=[],
        settings={
            "MERIDIAN_NOTIFY_TIMEOUT": "5",
            "MERIDIAN_DELIVERY_CONCURRENCY": "10",
            "MERIDIAN_WORKER_MAX_CONCURRENT_ACTIVITIES": "40",
            "MERIDIAN_REGIONAL_PICKUP_TIMEOUT": "PT5S",
        },
        deliveries=False,  # still being retried when the tickets are done
        inspect=delivery_attempts,
        expect=tickets_not_held_up,
    )
