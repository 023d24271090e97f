"""Periodic health polling of every agent: ``/readyz`` then ``/info``.

At most ``health.concurrency`` agents are polled at once (a semaphore) and each call is
bounded by ``health.timeout``, so a thousand agents or a few silent ones never pile up
requests. The result goes into the registry's `AgentState`: ``pass`` when ``/readyz``
answered 200, ``fail`` with the reason otherwise. ``/info`` adds version and labels; a
failing ``/info`` does not make a ready agent unhealthy, it is only recorded as the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from coordinator.agentapi import AgentApi, AgentError
from coordinator.discovery import Registry
from coordinator.model import AgentRef

log = logging.getLogger(__name__)


class HealthPoller:
    def __init__(self, registry: Registry, agent_api: AgentApi, *,
                 interval: float, timeout: float, concurrency: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.agent_api = agent_api
        self.interval = interval
        self.timeout = timeout
        self.semaphore = asyncio.Semaphore(concurrency)
        self.clock = clock
        self.rounds = 0  # completed polls of the whole fleet
        self.first_round = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_all()
            except Exception:  # one bad round must not stop polling
                log.exception("health poll round failed")
            await asyncio.sleep(self.interval)

    async def poll_all(self) -> None:
        """Poll every known agent once, concurrently (bounded)."""
        agents = self.registry.agents()
        await asyncio.gather(*(self._bounded(agent) for agent in agents))
        self.rounds += 1
        self.first_round.set()

    async def _bounded(self, agent: AgentRef) -> None:
        async with self.semaphore:
            await self.poll(agent)

    async def poll(self, agent: AgentRef) -> None:
        try:
            ready, reason = await self.agent_api.readyz(agent, self.timeout)
        except AgentError as exc:
            self._record(agent, "fail", str(exc), None)
            return
        info: dict[str, Any] | None = None
        error = reason
        try:
            info = await self.agent_api.info(agent, self.timeout)
        except AgentError as exc:
            error = error or f"/info: {exc}"
        self._record(agent, "pass" if ready else "fail", error, info, seen=True)

    def _record(self, agent: AgentRef, health: str, error: str | None,
                info: dict[str, Any] | None, seen: bool = False) -> None:
        if self.registry.get(agent.name) != agent:
            return  # it left or moved while we asked
        state = self.registry.state(agent.name)
        was = state.health
        state.health = "pass" if health == "pass" else "fail"
        state.error = error
        if seen:
            state.last_seen = self.clock()
        if info is not None:
            version, labels = info.get("version"), info.get("labels")
            if isinstance(version, str):
                state.version = version[:100]
            if isinstance(labels, dict):
                state.reported_labels = {str(k): str(v) for k, v in labels.items()}
        if was != state.health:
            log.info("agent %s is now %s%s", agent.name, state.health,
                     f" ({error})" if error else "")
