"""Health routes (open, path-free) and ``/info``, ``/metrics``, ``/`` (protected or plain).

Root checks report root *names* only: monitoring may call these without a token, so they
must not reveal where the files live.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from agent.budget import ReadBudget
from agent.state import AgentState
from common import __version__
from common import health as hf
from common.web import BaseHandler

# What this agent offers beyond release 0.1 (docs/agent-protocol.md); a coordinator that
# does not find a feature here does that work itself.
FEATURES = ("checksum", "deflate")


@dataclass(frozen=True)
class RootStatus:
    name: str
    readable: bool
    free_bytes: int | None
    problem: str | None = None


def check_root(name: str, directory: str) -> RootStatus:
    """Whether a root can be listed and read, and its free space (blocking)."""
    if not os.access(directory, os.R_OK | os.X_OK) or not os.path.isdir(directory):
        return RootStatus(name, False, None, "not readable")
    try:
        usage = os.statvfs(directory)
    except OSError:
        return RootStatus(name, True, None, "free space unknown")
    return RootStatus(name, True, usage.f_bavail * usage.f_frsize)


def check_roots(real_roots: dict[str, str]) -> list[RootStatus]:
    return [check_root(name, path) for name, path in real_roots.items()]


def not_ready_reasons(state: AgentState, roots: list[RootStatus]) -> list[str]:
    reasons = []
    if state.draining:
        reasons.append("draining: the agent is shutting down")
    reasons += [f"root {r.name} is not readable" for r in roots if not r.readable]
    if state.slots_full:
        reasons.append(f"all {state.max_downloads} download slots are in use")
    return reasons


def health_document(
    node: str, state: AgentState, roots: list[RootStatus], now: float
) -> dict[str, Any]:
    root_checks = [
        hf.check(
            "pass" if r.readable else "fail",
            component_id=r.name,
            observed_value=r.free_bytes,
            observed_unit="bytes",
            output=r.problem,
            now=now,
        )
        for r in roots
    ]
    for entry in root_checks:
        entry["componentType"] = "datastore"
    downloads = hf.check(
        "warn" if state.slots_full else "pass",
        observed_value=state.active_downloads,
        observed_unit="downloads",
        output="all download slots in use" if state.slots_full else None,
        now=now,
    )
    uptime = hf.check(
        "pass", observed_value=round(state.uptime(now), 3), observed_unit="s", now=now
    )
    document = hf.document(
        service_id=node,
        version=__version__,
        description=f"fleetzip agent {node}",
        checks={
            "roots:freeBytes": root_checks,
            "downloads:active": [downloads],
            "uptime": [uptime],
        },
    )
    if state.draining:
        document["status"] = "fail"
        document["output"] = "draining"
    return document


class _AgentHandler(BaseHandler):
    @property
    def state(self) -> AgentState:
        state: AgentState = self.settings["agent_state"]
        return state

    async def root_statuses(self) -> list[RootStatus]:
        executor: Executor | None = self.settings.get("file_executor")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, check_roots, self.settings["real_roots"])


class LivezHandler(_AgentHandler):
    route = "livez"

    def get(self) -> None:
        self.write_json({"status": "alive"})


class ReadyzHandler(_AgentHandler):
    route = "readyz"

    async def get(self) -> None:
        reasons = not_ready_reasons(self.state, await self.root_statuses())
        if reasons:
            self.write_json({"status": "not ready", "reasons": reasons}, 503)
        else:
            self.write_json({"status": "ready"})


class HealthHandler(_AgentHandler):
    route = "health"

    async def get(self) -> None:
        roots = await self.root_statuses()
        document = health_document(self.settings["node"], self.state, roots, time.time())
        status = 503 if document["status"] == "fail" else 200
        self.write_json(document, status, content_type=hf.HEALTH_CONTENT_TYPE)


class InfoHandler(_AgentHandler):
    route = "info"
    protected = True

    def get(self) -> None:
        state = self.state
        self.write_json(
            {
                "node": self.settings["node"],
                "version": __version__,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started)),
                "uptime_seconds": round(state.uptime(), 3),
                "roots": sorted(self.settings["real_roots"]),
                "labels": dict(self.settings.get("labels") or {}),
                "active_downloads": state.active_downloads,
                "max_concurrent_downloads": state.max_downloads,
                "bytes_served": state.bytes_served,
                "draining": state.draining,
                "read_budget": budget_figures(self.settings["read_budget"]),
                "features": list(FEATURES),
            }
        )


def budget_figures(budget: ReadBudget) -> dict[str, int]:
    """The read budget for ``/info``: bytes it allows, in use now, at most so far, mapped."""
    return {
        "bytes": budget.capacity,
        "in_use": budget.in_use,
        "high_water": budget.high_water,
        "buffers_mapped": budget.mapped,
        "buffers_mapped_high_water": budget.mapped_high_water,
        "squeezed": budget.squeezed,
    }


class MetricsHandler(_AgentHandler):
    route = "metrics"
    protected = True

    def get(self) -> None:
        metrics = self.settings["agent_metrics"]
        self.set_header("Content-Type", metrics.http.content_type)
        self.finish(metrics.render())


ROUTES = {
    "/files/{root}/{path}": "GET, HEAD: a file, Range and conditional requests (token); "
    "?compress=deflate[&crc=]: the range as raw-deflate frames",
    "/checksum/{root}/{path}?start=&end=&sha256=": "GET: CRC-32 (and SHA-256) of a range (token)",
    "/list/{root}[/{dir}]?glob=&recursive=&since=": "GET: files below a directory (token)",
    "/info": "GET: node, version, roots, downloads (token)",
    "/metrics": "GET: Prometheus metrics (token)",
    "/health": "GET: application/health+json (alias /healthz)",
    "/readyz": "GET: 200 ready or 503 with reasons",
    "/livez": "GET: 200 while the process runs",
}


class IndexHandler(_AgentHandler):
    route = "index"

    def get(self) -> None:
        self.write_json(
            {
                "service": "fleetzip-agent",
                "node": self.settings["node"],
                "version": __version__,
                "routes": ROUTES,
            }
        )
