"""The agent's mutable run-time state, shared by its handlers through app settings.

One `AgentState` per app (no globals): download slots, the draining flag set by SIGTERM,
and counters for ``/info``. Everything runs on the IOLoop thread, so no locks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from common.errors import TooManyRequests, Unavailable

RETRY_AFTER_BUSY = 1  # seconds: downloads are usually short, ask again soon
RETRY_AFTER_DRAINING = 5  # seconds: another agent or this one after restart


@dataclass
class AgentState:
    max_downloads: int
    started: float = field(default_factory=time.time)
    active_downloads: int = 0
    bytes_served: int = 0
    draining: bool = False
    _idle: asyncio.Event | None = None

    @property
    def slots_full(self) -> bool:
        return self.active_downloads >= self.max_downloads

    def check_accepting(self) -> None:
        """`Unavailable` while draining."""
        if self.draining:
            raise Unavailable("the agent is shutting down", retry_after=RETRY_AFTER_DRAINING)

    def acquire(self) -> None:
        """Take a download slot: `Unavailable` while draining, `TooManyRequests` when full."""
        self.check_accepting()
        if self.slots_full:
            raise TooManyRequests(
                f"all {self.max_downloads} download slots are in use",
                retry_after=RETRY_AFTER_BUSY,
            )
        self.active_downloads += 1
        if self._idle is not None:
            self._idle.clear()

    def release(self) -> None:
        self.active_downloads -= 1
        if self.active_downloads == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no download runs (True), or *timeout* seconds (False)."""
        if self.active_downloads == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def uptime(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.started
