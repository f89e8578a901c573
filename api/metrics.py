"""Prometheus metrics of the API process, served at /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response


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

    def observe(self, request: Request, status: int, seconds: float) -> None:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.requests.labels(request.method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
