"""The coordinator's Prometheus metrics, in a registry owned by one app.

Besides the HTTP request metrics of `common.metrics.HttpMetrics`, it counts what an
operator watches: agents known and healthy (read from discovery when scraped), merged
downloads running, finished (by result) and the bytes sent to clients. The download
handler reports through `download_started`, `add_bytes` and `download_finished`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from common.metrics import HttpMetrics

NAMESPACE = "fleetzip_coordinator"


class CoordinatorMetrics:
    content_type = HttpMetrics.content_type

    def __init__(self, agent_counts: Callable[[], tuple[int, int]]) -> None:
        """*agent_counts* returns ``(known, healthy)`` at scrape time."""
        self.registry = CollectorRegistry()
        self.http = HttpMetrics(NAMESPACE, self.registry)
        self._agent_counts = agent_counts
        self.agents_known = Gauge("agents_known", "Agents discovery knows",
                                  namespace=NAMESPACE, registry=self.registry)
        self.agents_known.set_function(lambda: float(self._agent_counts()[0]))
        self.agents_healthy = Gauge("agents_healthy", "Agents whose last health poll passed",
                                    namespace=NAMESPACE, registry=self.registry)
        self.agents_healthy.set_function(lambda: float(self._agent_counts()[1]))
        self.downloads_active = Gauge("downloads_active", "Merged downloads being streamed",
                                      namespace=NAMESPACE, registry=self.registry)
        self.downloads = Counter("downloads", "Merged downloads finished, by result",
                                 ["result"], namespace=NAMESPACE, registry=self.registry)
        self.bytes_sent = Counter("download_bytes_sent", "Bytes of merged ZIPs sent to clients",
                                  namespace=NAMESPACE, registry=self.registry)
        self.proxy_bytes = Counter("proxy_bytes_sent", "Bytes of single node files proxied",
                                   namespace=NAMESPACE, registry=self.registry)
        self.active = 0

    def download_started(self) -> None:
        self.active += 1
        self.downloads_active.inc()

    def add_bytes(self, count: int) -> None:
        self.bytes_sent.inc(count)

    def download_finished(self, result: str) -> None:
        """*result*: ``ok``, ``partial``, ``failed`` or ``cancelled``."""
        self.active -= 1
        self.downloads_active.dec()
        self.downloads.labels(result).inc()

    def render(self) -> bytes:
        return self.http.render()
