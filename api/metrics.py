"""Prometheus metrics of the API process, served at /metrics."""

from __future__ import annotations

import asyncpg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

# Counted as they are recorded by the trigger of migration 0016, which lists the same kinds.
SRE_EVENTS = (
    "sla_warning",
    "sla_breached",
    "escalated",
    "escalation_acknowledged",
    "escalation_resolved",
    "handed_off",
    "handoff_acknowledged",
    "handoff_unacknowledged",
    "csat_sent",
    "csat_received",
    "notification_failed",
)
OPEN_STATUSES = ["new", "queued", "open", "pending_customer"]
PRIORITIES = ("P1", "P2", "P3", "P4")
CHANNELS = ("webhook", "email", "slack", "pagerduty")
UNDELIVERED = ("pending", "failed")


class ApiMetrics:
    """Its own registry per app, so tests that build several apps do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "meridian_api_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meridian_api_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
        )
        self.tickets_created = Counter(
            "meridian_tickets_created",
            "Tickets accepted by the API, by channel",
            ["channel"],
            registry=self.registry,
        )
        # Read from PostgreSQL at each scrape, so every API replica reports the same desk-wide figures.
        self.open_tickets = Gauge(
            "meridian_open_tickets",
            "Tickets not yet resolved, by region, status, priority and SLA state",
            ["region", "status", "priority", "sla_state"],
            registry=self.registry,
        )
        self.timeline_events = Gauge(
            "meridian_timeline_events",
            "Escalations, breaches, acknowledgements, handoffs, surveys and failed deliveries ever recorded",
            ["kind", "region", "priority"],
            registry=self.registry,
        )
        # Every known region and priority is reported, at 0 when empty, so a panel shows 0 rather than
        # "no data" and an alert compares a number instead of a missing series.
        self.queue_depth = Gauge(
            "meridian_queue_depth",
            "Tickets waiting for an agent, by home region and priority",
            ["region", "priority"],
            registry=self.registry,
        )
        self.queue_oldest = Gauge(
            "meridian_queue_oldest_seconds",
            "How long the longest-waiting queued ticket has waited, by home region and priority",
            ["region", "priority"],
            registry=self.registry,
        )
        self.escalations_waiting = Gauge(
            "meridian_escalations_unacknowledged",
            "Open tickets whose escalation chain nobody has acknowledged yet, by region and priority",
            ["region", "priority"],
            registry=self.registry,
        )
        self.escalation_oldest = Gauge(
            "meridian_escalation_unacknowledged_oldest_seconds",
            "Since when the oldest unacknowledged escalation chain has been paging, by region and priority",
            ["region", "priority"],
            registry=self.registry,
        )
        # A day back only: a delivery whose worker died for good mid-retry (or one from before failed
        # rows were written on the last attempt) stays 'pending', and would hold its alert up forever.
        self.notifications_undelivered = Gauge(
            "meridian_notifications_undelivered",
            "Notifications and pages of the last 24 h not delivered: still retrying (pending) or "
            "refused by the receiver or given up after the last attempt (failed), by channel",
            ["channel", "status"],
            registry=self.registry,
        )
        self.notification_oldest_pending = Gauge(
            "meridian_notification_pending_oldest_seconds",
            "Age of the oldest notification of the last 24 h still waiting for delivery, by channel",
            ["channel"],
            registry=self.registry,
        )

    def observe(self, request: Request, status: int, seconds: float) -> None:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.requests.labels(request.method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    async def refresh(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            open_rows = await conn.fetch(
                """SELECT coalesce(region, 'none') AS region, status, coalesce(priority, 'none') AS priority,
                          coalesce(sla_state, 'none') AS sla_state, count(*) AS n
                   FROM tickets WHERE status = ANY($1::text[])
                   GROUP BY 1, 2, 3, 4""",
                OPEN_STATUSES,
            )
            # Kept by a trigger on ticket_events (migration 0016): counting the timeline is too slow.
            event_rows = await conn.fetch("SELECT kind, region, priority, n FROM timeline_event_counts")
            regions = [r["id"] for r in await conn.fetch("SELECT id FROM regions")]
            queue_rows = await conn.fetch(
                """SELECT coalesce(home_region, 'none') AS region, priority, count(*) AS n,
                          extract(epoch FROM now() - min(queued_at)) AS oldest
                   FROM ticket_queue GROUP BY 1, 2"""
            )
            # The chain running now is the one started after the last acknowledgement or resolution.
            escalation_rows = await conn.fetch(
                """SELECT coalesce(t.region, 'none') AS region, coalesce(t.priority, 'none') AS priority,
                          count(*) AS n, extract(epoch FROM now() - min(chain.started)) AS oldest
                   FROM tickets t CROSS JOIN LATERAL (
                       SELECT min(e.at) AS started FROM ticket_events e
                       WHERE e.ticket_id = t.id AND e.kind = 'escalated' AND e.seq > coalesce(
                           (SELECT max(a.seq) FROM ticket_events a WHERE a.ticket_id = t.id
                              AND a.kind IN ('escalation_acknowledged', 'escalation_resolved')), 0)
                   ) chain
                   WHERE t.status = ANY($1::text[]) AND chain.started IS NOT NULL
                   GROUP BY 1, 2""",
                OPEN_STATUSES,
            )
            notification_rows = await conn.fetch(
                """SELECT CASE WHEN kind LIKE 'page:%' THEN split_part(kind, ':', 2) ELSE 'webhook' END
                              AS channel,
                          status, count(*) AS n, extract(epoch FROM now() - min(created_at)) AS oldest
                   FROM notifications
                   WHERE status IN ('pending', 'failed') AND created_at > now() - interval '1 day'
                   GROUP BY 1, 2"""
            )
        self.open_tickets.clear()
        for r in open_rows:
            self.open_tickets.labels(r["region"], r["status"], r["priority"], r["sla_state"]).set(r["n"])
        self.timeline_events.clear()
        for r in event_rows:
            self.timeline_events.labels(r["kind"], r["region"], r["priority"]).set(r["n"])
        everywhere = [(region, priority) for region in regions for priority in PRIORITIES]
        _set_per_group(self.queue_depth, self.queue_oldest, everywhere, queue_rows)
        _set_per_group(self.escalations_waiting, self.escalation_oldest, everywhere, escalation_rows)
        self.notifications_undelivered.clear()
        self.notification_oldest_pending.clear()
        for channel in CHANNELS:
            self.notification_oldest_pending.labels(channel).set(0)
            for status in UNDELIVERED:
                self.notifications_undelivered.labels(channel, status).set(0)
        for r in notification_rows:
            self.notifications_undelivered.labels(r["channel"], r["status"]).set(r["n"])
            if r["status"] == "pending":
                self.notification_oldest_pending.labels(r["channel"]).set(max(float(r["oldest"]), 0.0))

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _set_per_group(
    count: Gauge, oldest: Gauge, everywhere: list[tuple[str, str]], rows: list[asyncpg.Record]
) -> None:
    """A count and an oldest age per (region, priority): 0 for every known pair, then what the rows say.
    Ages are clamped at 0: rows carry workflow time, which can run ahead of the database clock."""
    count.clear()
    oldest.clear()
    for labels in everywhere:
        count.labels(*labels).set(0)
        oldest.labels(*labels).set(0)
    for r in rows:
        count.labels(r["region"], r["priority"]).set(r["n"])
        oldest.labels(r["region"], r["priority"]).set(max(float(r["oldest"]), 0.0))
