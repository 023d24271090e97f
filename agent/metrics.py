"""The agent's Prometheus metrics, in the app's own registry (see `common.metrics`)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.budget import ReadBudget
from agent.state import AgentState
from common.metrics import HttpMetrics

NAMESPACE = "fleetzip_agent"


class AgentMetrics:
    """HTTP metrics by route and status, bytes served, downloads running, the read budget."""

    def __init__(self, state: AgentState, budget: ReadBudget) -> None:
        self.http = HttpMetrics(NAMESPACE)
        self.registry = self.http.registry
        self.bytes_served = Counter(
            "bytes_served",
            "File body bytes written to clients",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.sendfile_bytes = Counter(
            "sendfile_bytes",
            "File body bytes sent by sendfile (page cache to socket in the kernel): part of "
            "bytes_served, never read into the agent, so outside the read budget",
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
        self.registry.register(BudgetCollector(budget))

    def render(self) -> bytes:
        return self.http.render()


class BudgetCollector(Collector):
    """The read budget's figures, read from the `ReadBudget` at each scrape."""

    def __init__(self, budget: ReadBudget) -> None:
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        budget = self.budget
        gauges = (
            ("read_budget_bytes", "The read budget (read_budget)", budget.capacity),
            (
                "read_budget_in_use_bytes",
                "Bytes read from disk and not yet handed to the kernel, all downloads",
                budget.in_use,
            ),
            (
                "read_budget_high_water_bytes",
                "The most read_budget_in_use_bytes has been since the start",
                budget.high_water,
            ),
            (
                "read_buffers_mapped_bytes",
                "Memory mapped for read buffers: in use plus idle ones kept for reuse",
                budget.mapped,
            ),
            (
                "read_buffers_mapped_high_water_bytes",
                "The most read_buffers_mapped_bytes has been since the start",
                budget.mapped_high_water,
            ),
        )
        for name, text, value in gauges:
            yield GaugeMetricFamily(f"{NAMESPACE}_{name}", text, value=value)
        yield CounterMetricFamily(
            f"{NAMESPACE}_read_budget_squeezed",
            "Pieces read smaller than the pace asked, or not read ahead, to stay in the budget",
            value=budget.squeezed,
        )
