"""Planning: a `Selection` resolved against the agents into a `Plan` (what ``/api/plan``
shows and ``/api/download`` streams).

Each selected agent is asked concurrently (bounded by ``health.concurrency``) for
``/list/{root}[/{path}]`` with the glob and since — one request per node, also when the
selection names a single file (the listing has its size and mtime; a ``HEAD`` for its ETag
was dropped: nothing sent it, and it was a third of the agent requests of a one-file
download from a large fleet). An agent that is down, refuses or times out is *failed*; one
answering 404 (no such root or path) or listing nothing is *skipped*; both are recorded
with the reason and the plan goes on.

Listings are untrusted (`coordinator.listing`): an entry whose path fails
`check_relative_path`, lies outside the requested path, or has no sane size/mtime is refused
and recorded in `NodePlan.rejected` (the node's ``rejected`` list in the plan's JSON and in
``status.json``). Nodes are admitted smallest first while all their files together stay
within `MAX_TOTAL_BYTES`; a node past it is *failed* ("lists N bytes"), the rest go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from common.errors import BadRequest, NotFound, PayloadTooLarge
from coordinator.agentapi import AgentApi, AgentError, AgentStatusError
from coordinator.archive import planned_archive_size
from coordinator.config import CoordinatorConfig
from coordinator.discovery import Registry
from coordinator.listing import MAX_TOTAL_BYTES, checked_entries
from coordinator.model import AgentRef, NodePlan, Plan, Selection, SkippedNode

log = logging.getLogger(__name__)

NO_SUCH_ROOT = "no root named"  # how a node without the requested root is recorded


class Planner:
    def __init__(self, config: CoordinatorConfig, registry: Registry, agent_api: AgentApi, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.registry = registry
        self.agent_api = agent_api
        self.clock = clock
        self.semaphore = asyncio.Semaphore(config.health.concurrency)

    async def plan(self, selection: Selection) -> Plan:
        """Ask the selected agents; `BadRequest` for unknown nodes, `NotFound` for none."""
        agents = self.select(selection)
        results = await asyncio.gather(*(self._bounded(a, selection) for a in agents))
        nodes, too_big = within_total(r for r in results if isinstance(r, NodePlan))
        skipped = tuple(r for r in results if isinstance(r, SkippedNode)) + too_big
        if not nodes and skipped and all(s.error.startswith(NO_SUCH_ROOT) for s in skipped):
            raise BadRequest(f"root: no selected agent has a root named {selection.root!r}",
                             parameter="root")
        return Plan(selection, nodes, skipped, created=self.clock())

    def select(self, selection: Selection) -> list[AgentRef]:
        known = {agent.name for agent in self.registry.agents()}
        unknown = [name for name in selection.nodes if name not in known]
        if unknown:
            raise BadRequest(f"nodes: unknown node(s) {', '.join(unknown)}", parameter="nodes")
        agents = self.registry.select(selection.nodes, selection.labels)
        if not agents:
            raise NotFound(f"no node matches the selection ({_describe_filter(selection)})")
        return agents

    async def _bounded(self, agent: AgentRef, selection: Selection) -> NodePlan | SkippedNode:
        async with self.semaphore:
            return await self.plan_node(agent, selection)

    async def plan_node(self, agent: AgentRef, selection: Selection) -> NodePlan | SkippedNode:
        try:
            body = await self.agent_api.list(
                agent, selection.root, selection.path, glob=selection.glob,
                since=selection.since, recursive=selection.glob is None)
        except AgentStatusError as exc:
            if exc.code == "unknown_root":
                return SkippedNode(agent.name, agent.url, "skipped",
                                   f"{NO_SUCH_ROOT} {selection.root!r}")
            if exc.status == 404:
                return SkippedNode(agent.name, agent.url, "skipped", f"/list: {exc}")
            return SkippedNode(agent.name, agent.url, "failed", f"/list: {exc}")
        except AgentError as exc:
            return SkippedNode(agent.name, agent.url, "failed", str(exc))
        files, rejected = checked_entries(body, selection.path)
        if rejected:
            log.warning("agent %s listed entries that were refused: %s", agent.name,
                        "; ".join(rejected[:3]))
        if not files:
            error = "no matching files"
            if rejected:
                error += f"; listed entries refused: {'; '.join(rejected)}"
            return SkippedNode(agent.name, agent.url, "skipped", error)
        features = self.registry.state(agent.name).features
        return NodePlan(agent, selection.root, tuple(files), tuple(rejected), features)

    # -- sizes and limits --------------------------------------------------------------

    def archive_size(self, plan: Plan) -> int | None:
        """The exact size of the merged ZIP when it can be known, else None."""
        return planned_archive_size(plan)

    def check_limit(self, plan: Plan, archive_size: int | None) -> None:
        """`PayloadTooLarge` when the plan exceeds ``download.max_archive_size``."""
        limit = self.config.download.max_archive_size
        if not limit:
            return
        size = archive_size if archive_size is not None else plan.total_bytes
        if size > limit:
            what = "archive is" if archive_size is not None else "files total"
            raise PayloadTooLarge(
                f"the planned {what} {size} bytes, over the limit "
                f"download.max_archive_size = {limit} bytes; narrow the selection")


def within_total(found: Iterable[NodePlan], limit: int = MAX_TOTAL_BYTES,
                 ) -> tuple[tuple[NodePlan, ...], tuple[SkippedNode, ...]]:
    """The nodes admitted (smallest first, in their original order) while their files
    together stay within *limit* bytes, and the others as failed — so one agent listing
    absurd sizes loses its own node, not the archive of every node."""
    nodes = list(found)
    admitted: set[int] = set()
    total = 0
    for index in sorted(range(len(nodes)), key=lambda i: nodes[i].total_bytes):
        if total + nodes[index].total_bytes <= limit:
            total += nodes[index].total_bytes
            admitted.add(index)
    refused = tuple(
        SkippedNode(n.agent.name, n.agent.url, "failed",
                    f"lists {n.total_bytes} bytes in {len(n.files)} files; with the other "
                    f"nodes that is more than an archive holds ({limit} bytes)")
        for i, n in enumerate(nodes) if i not in admitted)
    return tuple(n for i, n in enumerate(nodes) if i in admitted), refused


def _describe_filter(selection: Selection) -> str:
    parts = []
    if selection.nodes:
        parts.append("nodes=" + ",".join(selection.nodes))
    if selection.labels:
        parts.append("labels=" + ",".join(f"{k}={v}" for k, v in selection.labels.items()))
    return "; ".join(parts) or "no agent is known"


def plan_to_json(plan: Plan, archive_size: int | None) -> dict[str, Any]:
    """The body of ``GET /api/plan``."""
    nodes = []
    for node in plan.nodes:
        files = [{"path": f.path, "entry": node.entry_name(f), "size": f.size, "mtime": f.mtime}
                 for f in node.files]
        nodes.append({"node": node.agent.name, "url": node.agent.url, "files": files,
                      "bytes": sum(f.size for f in node.files),
                      "rejected": list(node.rejected)})
    skipped = [{"node": s.name, "url": s.url, "state": s.state, "error": s.error}
               for s in plan.skipped]
    return {
        "request": plan.selection.as_dict(), "nodes": nodes, "skipped": skipped,
        "files": plan.file_count, "total_bytes": plan.total_bytes,
        "archive_size": archive_size, "sized": archive_size is not None,
    }
