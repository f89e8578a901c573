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

SRE_EVENTS = (
    "sla_warning",
    "sla_breached",
    "escalated",
    "escalation_acknowledged",
    "handed_off",
    "handoff_acknowledged",
    "handoff_unacknowledged",
)


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
            "Escalations, breaches, acknowledgements and handoffs ever recorded",
            ["kind", "region", "priority"],
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
                   FROM tickets WHERE status IN ('new', 'queued', 'open', 'pending_customer')
                   GROUP BY 1, 2, 3, 4"""
            )
            event_rows = await conn.fetch(
                """SELECT e.kind, coalesce(e.region, 'none') AS region,
                          coalesce(t.priority, 'none') AS priority, count(*) AS n
                   FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id
                   WHERE e.kind = ANY($1::text[]) GROUP BY 1, 2, 3""",
                list(SRE_EVENTS),
            )
        self.open_tickets.clear()
        for r in open_rows:
            self.open_tickets.labels(r["region"], r["status"], r["priority"], r["sla_state"]).set(r["n"])
        self.timeline_events.clear()
        for r in event_rows:
            self.timeline_events.labels(r["kind"], r["region"], r["priority"]).set(r["n"])

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
