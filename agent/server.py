"""Run an agent: listen, register, and handle signals.

* ``SIGTERM``/``SIGINT`` — drain: ``/readyz`` fails at once, new downloads get 503, running
  ones get up to ``shutdown_timeout`` to finish; then deregister, stop and exit 0.
* ``SIGHUP`` — reload the token files; an invalid file keeps the old tokens (logged).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from tornado.httpserver import HTTPServer

from agent.app import make_app
from agent.config import AgentConfig
from agent.register import Registration
from agent.state import AgentState
from common.auth import TokenStore

log = logging.getLogger(__name__)


class AgentServer:
    def __init__(self, config: AgentConfig, tokens: TokenStore) -> None:
        self.config = config
        self.tokens = tokens
        self.state = AgentState(max_downloads=config.max_concurrent_downloads)
        # One reader thread per download slot, plus a few for opens, listings and checks.
        self.executor = ThreadPoolExecutor(
            max_workers=min(64, config.max_concurrent_downloads + 4),
            thread_name_prefix="agent-io",
        )
        self.registration: Registration | None = None
        self._stop = asyncio.Event()

    async def run(self) -> int:
        app = make_app(self.config, tokens=self.tokens, state=self.state, executor=self.executor)
        ssl_context = self.config.tls.server_context() if self.config.tls else None
        server = HTTPServer(app, ssl_options=ssl_context, idle_connection_timeout=60)
        app.settings["http_server"] = server  # takes connections back after sendfile bodies
        host, port = self.config.host_port
        server.listen(port, host)
        self.install_signals()
        self.announce_start()
        if self.config.register is not None:
            self.registration = Registration(self.config, self.config.register)
            self.registration.start()
        await self._stop.wait()
        await self.drain()
        server.stop()
        await server.close_all_connections()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")
        return 0

    def announce_start(self) -> None:
        scheme = "https" if self.config.tls else "http"
        log.info(
            "agent %s listening on %s://%s, roots: %s",
            self.config.node,
            scheme,
            self.config.listen,
            ", ".join(sorted(self.config.roots)),
        )
        if not self.tokens.enabled:
            log.warning("no token_file configured: files and listings are open to anyone")

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def request_stop(self, why: str) -> None:
        if self.state.draining:
            return
        log.info("%s: draining (%d download(s) running)", why, self.state.active_downloads)
        self.state.draining = True
        self._stop.set()

    def reload(self) -> None:
        log.info("SIGHUP: reloading tokens")
        self.tokens.reload()
        if self.registration is not None:
            self.registration.tokens.reload()

    async def drain(self) -> None:
        timeout = self.config.shutdown_timeout
        if not await self.state.wait_idle(timeout):
            log.warning(
                "%d download(s) still running after shutdown_timeout %.0fs; closing them",
                self.state.active_downloads,
                timeout,
            )
        if self.registration is not None:
            await self.registration.stop()
