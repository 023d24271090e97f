"""Self-registration: announce this agent to a coordinator, and leave on shutdown.

``POST {coordinator}/api/agents/register`` with ``{"name", "url", "labels", "version"}``
every ``register.interval``; ``DELETE {coordinator}/api/agents/{name}`` when stopping.
Both carry ``Authorization: Bearer <token>`` when ``register.token_file`` is set (re-read
on SIGHUP with the other tokens). A coordinator that is down is logged and tried again at
the next beat; it never stops the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from agent.config import AgentConfig, RegisterConfig
from common import __version__
from common.auth import TokenStore

log = logging.getLogger(__name__)


class Registration:
    def __init__(
        self,
        config: AgentConfig,
        register: RegisterConfig,
        *,
        client: AsyncHTTPClient | None = None,
        tokens: TokenStore | None = None,
    ) -> None:
        self.node = config.node
        self.url = config.advertise_url()
        self.register = register
        self.client = client or AsyncHTTPClient()
        self.tokens = tokens or TokenStore.open(register.token_file)
        self.base = register.coordinator.rstrip("/")
        self.beats = 0
        self._task: asyncio.Task[None] | None = None

    def body(self) -> dict[str, Any]:
        return {
            "name": self.node,
            "url": self.url,
            "labels": dict(self.register.labels),
            "version": __version__,
        }

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.tokens.tokens:
            headers["Authorization"] = f"Bearer {self.tokens.tokens[0]}"
        return headers

    async def beat(self) -> bool:
        """One registration; True when the coordinator accepted it."""
        request = HTTPRequest(
            f"{self.base}/api/agents/register",
            method="POST",
            headers=self.headers(),
            body=json.dumps(self.body()),
            request_timeout=self.register.timeout,
        )
        try:
            await self.client.fetch(request)
        except (TimeoutError, HTTPClientError, OSError) as exc:
            log.warning("registration with %s failed: %s", self.base, exc)
            return False
        self.beats += 1
        return True

    async def run(self) -> None:
        """Beat every interval until cancelled."""
        while True:
            await self.beat()
            await asyncio.sleep(self.register.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop beating and deregister (best effort: the coordinator's TTL is the fallback)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        name = urllib.parse.quote(self.node, safe="")
        request = HTTPRequest(
            f"{self.base}/api/agents/{name}",
            method="DELETE",
            headers=self.headers(),
            request_timeout=self.register.timeout,
        )
        try:
            await self.client.fetch(request)
        except (TimeoutError, HTTPClientError, OSError) as exc:
            log.warning("deregistration from %s failed: %s", self.base, exc)
