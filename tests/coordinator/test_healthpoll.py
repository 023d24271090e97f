"""Health polling against a real agent app: /readyz every round, /info only when due."""

from __future__ import annotations

from pathlib import Path

import tornado.httpserver
import tornado.netutil

from agent.app import make_app
from agent.config import AgentConfig
from coordinator.agentapi import AgentApi
from coordinator.config import CoordinatorConfig, StaticAgent
from coordinator.discovery import Registry
from coordinator.healthpoll import HealthPoller


def requests_by_route(app: object, route: str) -> float:
    metrics = app.settings["http_metrics"]  # type: ignore[attr-defined]
    return sum(sample.value for metric in metrics.requests.collect()
               for sample in metric.samples
               if sample.name.endswith("_total") and sample.labels.get("route") == route)


async def test_info_is_asked_when_due_not_every_round(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    agent_app = make_app(AgentConfig(roots={"logs": str(tmp_path / "logs")}, node="n1",
                                     listen=f"127.0.0.1:{port}"))
    server = tornado.httpserver.HTTPServer(agent_app)
    server.add_sockets(sockets)
    config = CoordinatorConfig(agents=(StaticAgent("n1", f"http://127.0.0.1:{port}"),))
    registry = Registry(config)
    poller = HealthPoller(registry, AgentApi(config), interval=60, timeout=5,
                          concurrency=4, info_every=3)
    try:
        for _ in range(7):
            await poller.poll_all()
    finally:
        server.stop()
    state = registry.state("n1")
    assert state.health == "pass" and state.version is not None
    assert requests_by_route(agent_app, "readyz") == 7
    # rounds 0, 3 and 6 ask /info; the rounds between trust what it said
    assert requests_by_route(agent_app, "info") == 3
