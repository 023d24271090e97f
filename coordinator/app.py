"""The coordinator application: `make_app(config, ...)` wires routes to shared objects.

Shared objects in ``app.settings`` (handlers read them by these exact names):

==================  =========================================================================
``config``          the frozen `CoordinatorConfig`
``service``         the `CoordinatorService` owning everything below (start/stop/reload/drain)
``registry``        `coordinator.discovery.Registry`: ``agents()``, ``get(name)``,
                    ``select(nodes, labels)``, ``state(name)``, ``counts()``
``agent_api``       `coordinator.agentapi.AgentApi`: ``request(url, ...)`` (agent token, TLS,
                    timeouts), ``file_url(agent, root, path)``, ``client`` (the app's
                    `AbortableHTTPClient`), ``abort(request)``
``planner``         `coordinator.planner.Planner`: ``await plan(selection) -> Plan``,
                    ``archive_size(plan)``, ``check_limit(plan, archive_size)`` (413)
``metrics``         `coordinator.metrics.CoordinatorMetrics`: ``download_started()``,
                    ``add_bytes(n)``, ``download_finished(result)``, ``active``
``http_metrics``    ``metrics.http`` (used by `common.web.BaseHandler.on_finish`)
``audit``           `coordinator.audit.AuditLog`: ``download(user=, request=, nodes=, ...)``
``authenticator``   `coordinator.users.ClientAuthenticator`: ``await authenticate(request)``
                    -> `coordinator.users.Caller` | None (429 past the failure limit)
``registration``    `coordinator.registration.RegistrationGate`: ``authenticate(header)``,
                    ``authorize(node, name)``, ``check_url(url)``, ``off_reason``
``draining``        an `asyncio.Event`, set on SIGTERM: refuse new downloads (503)
``health_poller``   `coordinator.healthpoll.HealthPoller`
``downloads``       the `coordinator.download.DownloadManager`
==================  =========================================================================

Routes: ``/`` (page), ``/static/…``, ``/api/agents``, ``/api/agents/register``,
``/api/agents/{name}``, ``/api/sd``, ``/api/plan``, ``/api/download``, ``/api/downloads``,
``/api/nodes/{node}/files/{root}/{path}``, ``/livez``, ``/readyz``, ``/health``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.web
from tornado.httpclient import AsyncHTTPClient

from common.auth import TokenStore
from common.errors import ConfigError
from common.web import NotFoundHandler
from coordinator import handlers
from coordinator.agentapi import AgentApi
from coordinator.audit import AuditLog
from coordinator.config import CoordinatorConfig
from coordinator.discovery import Registry
from coordinator.download import DownloadHandler, DownloadManager, DownloadsHandler
from coordinator.healthpoll import HealthPoller
from coordinator.metrics import CoordinatorMetrics
from coordinator.planner import Planner
from coordinator.registration import RegistrationGate
from coordinator.users import ClientAuthenticator, UserStore
from coordinator.web import STATIC_DIR, IndexHandler

log = logging.getLogger(__name__)

NODE_FILE_ROUTE = r"/api/nodes/([^/]+)/files/([^/]+)/(.+)"


def open_authenticator(config: CoordinatorConfig) -> ClientAuthenticator:
    """Load token_file and users_file; a bad file is a `ConfigError` naming it.

    Password hashes are checked in one thread of their own: a flood of guesses queues
    there (bounded by the failure limiter) instead of taking the zip threads or the loop.
    """
    try:
        tokens = TokenStore.open(config.token_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(config.token_file), "token_file", str(exc)) from None
    try:
        users = UserStore.open(config.users_file, ThreadPoolExecutor(
            1, thread_name_prefix="fleetzip-auth"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(config.users_file), "users_file", str(exc)) from None
    return ClientAuthenticator(tokens, users)


def open_registration(config: CoordinatorConfig) -> RegistrationGate:
    """The registration gate; a bad ``registration.tokens_file`` is a `ConfigError`."""
    try:
        return RegistrationGate(config.registration)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(config.registration.tokens_file), "registration.tokens_file",
                          str(exc)) from None


def open_agent_api(config: CoordinatorConfig, http_client: AsyncHTTPClient | None) -> AgentApi:
    try:
        return AgentApi(config, http_client)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(config.agent_token_file), "agent_token_file", str(exc)) from None


class CoordinatorService:
    """Everything with a lifetime: background loops, reload, drain."""

    def __init__(self, config: CoordinatorConfig, *, clock: Callable[[], float] = time.time,
                 http_client: AsyncHTTPClient | None = None) -> None:
        self.config = config
        self.authenticator = open_authenticator(config)
        self.agent_api = open_agent_api(config, http_client)
        self.registration = open_registration(config)
        self.registry = Registry(config, clock=clock)
        self.registry.load_file_at_start()
        self.planner = Planner(config, self.registry, self.agent_api, clock=clock)
        self.metrics = CoordinatorMetrics(self.registry.counts)
        self.audit = AuditLog(config.audit_log, clock=clock)
        self.poller = HealthPoller(
            self.registry, self.agent_api, interval=config.health.interval,
            timeout=config.health.timeout, concurrency=config.health.concurrency, clock=clock)
        self.draining = asyncio.Event()
        self.downloads = DownloadManager(config, agent_api=self.agent_api,
                                         metrics=self.metrics, audit=self.audit, clock=clock)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start health polling and the agents_file watch (call with a running loop)."""
        self.poller.start()
        if self.config.agents_file:
            self._tasks.append(asyncio.ensure_future(self._watch_agents_file()))

    async def _watch_agents_file(self) -> None:
        while True:
            await asyncio.sleep(self.config.agents_file_interval)
            self.registry.check_file()

    def reload(self) -> bool:
        """SIGHUP: tokens, users, agent token, registration tokens, agents_file, audit log;
        bad parts keep old."""
        ok = self.authenticator.reload()
        ok = self.agent_api.reload() and ok
        ok = self.registration.reload() and ok
        ok = self.registry.check_file(force=True) and ok
        self.audit.reopen()
        log.info("reload %s", "done" if ok else "kept some old settings (see errors above)")
        return ok

    async def drain(self, grace: float) -> None:
        """SIGTERM: readiness fails now; wait up to *grace* s for downloads to end."""
        self.draining.set()
        deadline = time.monotonic() + grace
        while self.metrics.active > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.metrics.active:
            log.warning("%d download(s) still running after %.0fs; cutting them off",
                        self.metrics.active, grace)

    async def stop(self) -> None:
        await self.poller.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.audit.close()
        if self.authenticator.users.executor is not None:
            self.authenticator.users.executor.shutdown(wait=False, cancel_futures=True)


def make_app(config: CoordinatorConfig, *, clock: Callable[[], float] | None = None,
             http_client: AsyncHTTPClient | None = None,
             service: CoordinatorService | None = None,
             **settings: Any) -> tornado.web.Application:
    """The coordinator's Tornado application (nothing started: see `CoordinatorService.start`).

    Raises `ConfigError` when a file the config points to (tokens, users, agents_file) is bad.
    """
    service = service or CoordinatorService(config, clock=clock or time.time,
                                            http_client=http_client)
    routes: list[Any] = [
        (r"/", IndexHandler),
        (r"/static/(.*)", handlers.ProtectedStaticHandler, {"path": str(STATIC_DIR)}),
        (r"/api/download", DownloadHandler),
        (r"/api/downloads", DownloadsHandler),
        (r"/api/agents", handlers.AgentsHandler),
        (r"/api/agents/register", handlers.RegisterHandler),
        (r"/api/agents/([^/]+)", handlers.AgentHandler),
        (r"/api/sd", handlers.ServiceDiscoveryHandler),
        (r"/api/plan", handlers.PlanHandler),
        (NODE_FILE_ROUTE, handlers.NodeFileHandler),
        (r"/livez", handlers.LivezHandler),
        (r"/readyz", handlers.ReadyzHandler),
        (r"/health", handlers.HealthHandler),
        (r"/healthz", handlers.HealthHandler),
        (r"/metrics", handlers.MetricsHandler),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        config=config,
        service=service,
        registry=service.registry,
        agent_api=service.agent_api,
        planner=service.planner,
        metrics=service.metrics,
        http_metrics=service.metrics.http,
        audit=service.audit,
        authenticator=service.authenticator,
        draining=service.draining,
        health_poller=service.poller,
        registration=service.registration,
        downloads=service.downloads,
        **settings,
    )
