"""Periodic health polling of every agent: ``/readyz``, and ``/info`` when it is due.

Rounds start every ``health.interval`` (a fixed cadence: the time a round takes is not
added to the pause; a round longer than the interval is logged as a warning and the next
one starts at once). At most ``health.concurrency`` agents are polled at once (a
semaphore) and each call is bounded by ``health.timeout``, so a thousand agents or a few
silent ones never pile up requests. The result goes into the registry's `AgentState`:
``pass`` when ``/readyz`` answered 200, ``fail`` with the reason otherwise.

``/info`` adds version and labels. It is asked when they are not known yet, when the agent
was not healthy in the previous round (it may have restarted as another version), and
otherwise every ``info_every`` rounds (10) — so a steady fleet costs one request per agent
per round, not two. A failing ``/info`` does not make a ready agent unhealthy, it is only
recorded as the error (and asked again next round).
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

INFO_EVERY = 10  # rounds between two /info of a steadily healthy agent


class HealthPoller:
    def __init__(self, registry: Registry, agent_api: AgentApi, *,
                 interval: float, timeout: float, concurrency: int,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 info_every: int = INFO_EVERY) -> None:
        self.registry = registry
        self.agent_api = agent_api
        self.interval = interval
        self.timeout = timeout
        self.semaphore = asyncio.Semaphore(concurrency)
        self.clock = clock
        self.monotonic = monotonic
        self.info_every = info_every
        self.rounds = 0  # completed polls of the whole fleet
        self.round_size = 0  # agents asked in the last round
        self.first_round = asyncio.Event()
        self._info_round: dict[str, int] = {}  # agent name -> round of its last good /info
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
            began = self.monotonic()
            try:
                await self.poll_all()
            except Exception:  # one bad round must not stop polling
                log.exception("health poll round failed")
            await asyncio.sleep(self._pause(self.monotonic() - began))

    def _pause(self, took: float) -> float:
        """Seconds until the next round starts: the rest of the interval."""
        if took > self.interval:
            log.warning("health round of %d agents took %.2fs, longer than health.interval "
                        "(%gs)", self.round_size, took, self.interval)
        return max(0.0, self.interval - took)

    async def poll_all(self) -> None:
        """Poll every known agent once, concurrently (bounded)."""
        agents = self.registry.agents()
        self.round_size = len(agents)
        self._forget_info_of(agents)
        await asyncio.gather(*(self._bounded(agent) for agent in agents))
        self.rounds += 1
        self.first_round.set()

    def _forget_info_of(self, agents: list[AgentRef]) -> None:
        """Drop the /info bookkeeping of agents that left (keeps the dict bounded)."""
        if len(self._info_round) > len(agents):
            names = {agent.name for agent in agents}
            self._info_round = {k: v for k, v in self._info_round.items() if k in names}

    async def _bounded(self, agent: AgentRef) -> None:
        async with self.semaphore:
            await self.poll(agent)

    async def poll(self, agent: AgentRef) -> None:
        try:
            ready, reason = await self.agent_api.readyz(agent, self.timeout)
        except AgentError as exc:
            self._info_round.pop(agent.name, None)  # back up: ask /info again
            self._record(agent, "fail", str(exc), None)
            return
        info: dict[str, Any] | None = None
        error = reason
        if self._wants_info(agent):
            try:
                info = await self.agent_api.info(agent, self.timeout)
            except AgentError as exc:
                error = error or f"/info: {exc}"
            else:
                self._info_round[agent.name] = self.rounds
        self._record(agent, "pass" if ready else "fail", error, info, seen=True)

    def _wants_info(self, agent: AgentRef) -> bool:
        """Ask ``/info`` now? See the module docstring."""
        last = self._info_round.get(agent.name)
        if last is None or self.rounds - last >= self.info_every:
            return True
        state = self.registry.state(agent.name)
        return state.health != "pass" or state.version is None

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
            state.features = parse_features(info.get("features"))
        if was != state.health:
            log.info("agent %s is now %s%s", agent.name, state.health,
                     f" ({error})" if error else "")


KNOWN_FEATURES = frozenset({"checksum", "deflate"})


def parse_features(value: Any) -> frozenset[str]:
    """The features of an /info answer that this coordinator knows (untrusted: anything but
    a list of strings, or an unknown name, counts as absent)."""
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value[:32] if isinstance(v, str) and v in KNOWN_FEATURES)
