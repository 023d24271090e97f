"""The agent's Prometheus metrics, in the app's own registry (see `common.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from agent.state import AgentState
from common.metrics import HttpMetrics

NAMESPACE = "fleetzip_agent"


class AgentMetrics:
    """HTTP metrics by route and status, plus bytes served and downloads running."""

    def __init__(self, state: AgentState) -> None:
        self.http = HttpMetrics(NAMESPACE)
        self.registry = self.http.registry
        self.bytes_served = Counter(
            "bytes_served",
            "File body bytes written to clients",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.active_downloads = Gauge(
            "active_downloads",
            "File downloads being streamed now",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.active_downloads.set_function(lambda: state.active_downloads)
        self.max_downloads = Gauge(
            "max_concurrent_downloads",
            "Download slots (max_concurrent_downloads)",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.max_downloads.set(state.max_downloads)
        self.draining = Gauge(
            "draining", "1 while the agent shuts down", namespace=NAMESPACE, registry=self.registry
        )
        self.draining.set_function(lambda: 1.0 if state.draining else 0.0)

    def render(self) -> bytes:
        return self.http.render()
