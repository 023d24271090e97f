"""HTTP request metrics, in a registry owned by each app (no module-level globals).

Several apps may share a process (tests, the fleet simulation), so every app makes its
own `CollectorRegistry` and serves it on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class HttpMetrics:
    """Requests, errors and latency by route and status, for one app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, namespace: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            namespace=namespace,
            registry=self.registry,
        )
        self.errors = Counter(
            "http_errors",
            "HTTP answers with a 4xx or 5xx status, by route and status",
            ["route", "status"],
            namespace=namespace,
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer (to the end of the body)",
            ["route"],
            namespace=namespace,
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
