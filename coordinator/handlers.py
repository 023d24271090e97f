"""The coordinator's HTTP handlers, except the merged download (`coordinator.download`)
and the page (`coordinator.web`). Thin adapters: the work is in discovery, planner and
agentapi; they read their collaborators from ``self.settings`` (see `coordinator.app`).

Open routes: ``/livez``, ``/readyz``, ``/health``. Agent routes (register, deregister) take
the calling node's own registration token. Everything else is ``protected`` (client bearer
token or Basic).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders, ResponseStartLine, parse_response_start_line
from tornado.iostream import StreamClosedError

from common import __version__, health
from common.download_headers import (
    FILE_RESPONSE_HEADERS,
    attachment_disposition,
    safe_content_type,
)
from common.errors import (
    ApiError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
)
from common.names import check_relative_path
from common.web import BaseHandler
from coordinator.agentapi import AgentApi, ClientGone
from coordinator.discovery import Registry
from coordinator.healthpoll import HealthPoller
from coordinator.metrics import CoordinatorMetrics
from coordinator.planner import Planner, plan_to_json
from coordinator.registration import RegistrationGate, parse_registration
from coordinator.selection import parse_root, parse_selection, query_arguments
from coordinator.web import StaticHandler

log = logging.getLogger(__name__)

MAX_JSON_BODY = 64 * 1024  # a registration is a few hundred bytes


class BadGateway(ApiError):
    status, code = 502, "bad_gateway"


class CoordinatorHandler(BaseHandler):
    """Typed access to the shared objects in the app settings."""

    @property
    def registry(self) -> Registry:
        registry: Registry = self.settings["registry"]
        return registry

    @property
    def agent_api(self) -> AgentApi:
        api: AgentApi = self.settings["agent_api"]
        return api

    @property
    def planner(self) -> Planner:
        planner: Planner = self.settings["planner"]
        return planner

    @property
    def metrics(self) -> CoordinatorMetrics:
        metrics: CoordinatorMetrics = self.settings["metrics"]
        return metrics

    @property
    def draining(self) -> bool:
        return bool(self.settings["draining"].is_set())

    def json_body(self, limit: int = MAX_JSON_BODY) -> Any:
        """The request's JSON body; `PayloadTooLarge` / `BadRequest` when it is not sane."""
        if len(self.request.body) > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")
        try:
            return json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest("the request body is not valid JSON") from None


# -- agents ------------------------------------------------------------------------------


class AgentsHandler(CoordinatorHandler):
    route = "agents"
    protected = True

    def get(self) -> None:
        self.write_json({"agents": self.registry.describe()})


class AgentTokenHandler(CoordinatorHandler):
    """Routes agents call, each with its own registration token (`coordinator.registration`):
    403 while registration is off, 401 for a token that is in no ``tokens_file`` line."""

    @property
    def gate(self) -> RegistrationGate:
        gate: RegistrationGate = self.settings["registration"]
        return gate

    def prepare(self) -> None:
        self.node = self.gate.authenticate(self.request.headers.get("Authorization"))


class RegisterHandler(AgentTokenHandler):
    route = "register"

    def post(self) -> None:
        name, url, labels, version = parse_registration(self.json_body(), self.gate)
        self.gate.authorize(self.node, name)
        ttl = self.registry.register(name, url, labels, version)
        self.write_json({"ttl": ttl})


class AgentHandler(AgentTokenHandler):
    route = "deregister"

    def delete(self, name: str) -> None:
        self.gate.authorize(self.node, name)
        if not self.registry.deregister(name):
            raise NotFound(f"no agent named {name!r}")
        self.write_json({"deregistered": name})


class ServiceDiscoveryHandler(CoordinatorHandler):
    """Prometheus HTTP SD: ``[{"targets": ["host:port"], "labels": {...}}]``."""

    route = "sd"
    protected = True

    def get(self) -> None:
        self.write_json(self.registry.service_discovery())


# -- plan --------------------------------------------------------------------------------


class PlanHandler(CoordinatorHandler):
    route = "plan"
    protected = True

    async def get(self) -> None:
        config = self.settings["config"]
        selection = parse_selection(
            query_arguments(self.request.query_arguments),
            known_nodes=[a.name for a in self.registry.agents()],
            default_compression=config.download.compression,
            now=time.time(),
        )
        plan = await self.planner.plan(selection)
        archive_size = self.planner.archive_size(plan)
        self.planner.check_limit(plan, archive_size)
        self.write_json(plan_to_json(plan, archive_size))


# -- one node's file, proxied ------------------------------------------------------------

REQUEST_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match",
                   "If-Unmodified-Since")
# Copied from the agent's answer. Content-Type and Content-Disposition are not: the
# coordinator sets them itself (`common.download_headers`): a proxied file is served from the
# coordinator's origin, where the operator's credentials live, and must never run as a page
# there (SPEC §4; docs/security.md "the web origin").
RESPONSE_HEADERS = ("Content-Length", "Content-Range", "ETag", "Last-Modified",
                    "Accept-Ranges", "Retry-After", "Cache-Control")


class NodeFileHandler(CoordinatorHandler):
    """``GET|HEAD /api/nodes/{node}/files/{root}/{path}``: the agent's answer, streamed.

    The file always leaves as a download: ``Content-Disposition: attachment`` named by the
    coordinator from the requested path, a safe ``Content-Type``, ``nosniff`` and a
    ``sandbox`` CSP — whatever the agent answered (an agent can be hostile; its bytes are
    served from the origin that holds the operator's credentials).

    Flow control is the same as for merged downloads: the streaming callback returns an
    awaitable that writes and flushes each chunk, so the agent is read no faster than the
    client takes it. A client that leaves aborts the agent fetch at once; an agent silent
    for ``download.idle_timeout`` is given up (the response is cut short).
    """

    route = "node_file"
    protected = True

    def initialize(self) -> None:
        self._fetch: HTTPRequest | None = None
        self._start: ResponseStartLine | None = None
        self._headers = HTTPHeaders()
        self._started = False
        self._refused = False
        self._client_gone = False
        self._flushing = False
        self._last_activity = time.monotonic()
        self._basename = "download"

    async def get(self, node: str, root: str, path: str) -> None:
        await self.proxy(node, root, path)

    async def head(self, node: str, root: str, path: str) -> None:
        await self.proxy(node, root, path)

    async def proxy(self, node: str, root: str, path: str) -> None:
        agent = self.registry.get(node)
        if agent is None:
            raise NotFound(f"no agent named {node!r}")
        parse_root(root)
        try:
            check_relative_path(path)
        except ValueError as exc:
            raise BadRequest(f"path: {exc}", parameter="path") from None
        self._basename = path.rsplit("/", 1)[-1]
        headers = {h: v for h in REQUEST_HEADERS if (v := self.request.headers.get(h))}
        self._fetch = self.agent_api.request(
            self.agent_api.file_url(agent, root, path), method=self.request.method or "GET",
            headers=headers, request_timeout=0,
            header_callback=self._on_header_line, streaming_callback=self._on_chunk)
        watchdog = asyncio.ensure_future(self._watch_idle())
        try:
            response = await self.agent_api.client.fetch(self._fetch, raise_error=False)
            code, error = response.code, response.error
        except (OSError, HTTPClientError, ValueError) as exc:
            code, error = 599, exc
        finally:
            watchdog.cancel()
        self._finish_proxy(code, error, agent.name)

    def _finish_proxy(self, code: int, error: BaseException | None, node: str) -> None:
        if self._client_gone:
            return
        if self._refused:
            raise BadGateway(f"agent {node} refused the coordinator's agent token")
        if code == 599:
            if self._started:
                log.warning("proxy of %s from %s cut short: %s", self.request.path, node, error)
                self.request.connection.close()  # type: ignore[union-attr]
                return
            reason = "connection refused" if isinstance(error, ConnectionRefusedError) else error
            raise BadGateway(f"agent {node} is unreachable: {reason}")
        if not self._started:
            self._begin_response()
        if not self._refused:
            self.finish()

    def _on_header_line(self, line: str) -> None:
        if self._start is None:
            self._start = parse_response_start_line(line.strip())
        elif line.strip():
            self._headers.parse_line(line)

    def _begin_response(self) -> None:
        self._started = True
        assert self._start is not None
        if self._start.code in (401, 403):
            self._refused = True  # our agent token, not the client's credentials
            return
        self.set_status(self._start.code, self._start.reason or None)
        for name in RESPONSE_HEADERS:
            value = self._headers.get(name)
            if value is not None:
                self.set_header(name, value)
        self.set_header("Content-Type", safe_content_type(self._headers.get("Content-Type")))
        self.set_header("Content-Disposition", attachment_disposition(self._basename))
        for name, value in FILE_RESPONSE_HEADERS.items():
            self.set_header(name, value)

    async def _on_chunk(self, chunk: bytes) -> None:
        if self._client_gone:
            raise ClientGone("client left")
        if not self._started:
            self._begin_response()
        if self._refused:
            return
        self._last_activity = time.monotonic()
        self.write(chunk)
        self._flushing = True
        try:
            await self.flush()
        except StreamClosedError:
            self._client_gone = True
            raise ClientGone("client left") from None
        finally:
            self._flushing = False
            self._last_activity = time.monotonic()
        self.metrics.proxy_bytes.inc(len(chunk))

    async def _watch_idle(self) -> None:
        idle = self.settings["config"].download.idle_timeout
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            stalled = time.monotonic() - self._last_activity > idle
            if stalled and not self._flushing and self._fetch is not None:
                self.agent_api.abort(self._fetch, f"agent idle for {idle:g}s")
                return

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._fetch is not None:
            self.agent_api.abort(self._fetch)


# -- probes and metrics ------------------------------------------------------------------


class LivezHandler(CoordinatorHandler):
    route = "livez"

    def get(self) -> None:
        self.write_json({"status": "alive"})


class ReadyzHandler(CoordinatorHandler):
    """503 while draining (SIGTERM) and until the first health round has finished."""

    route = "readyz"

    def get(self) -> None:
        known, healthy = self.registry.counts()
        reasons = []
        if self.draining:
            reasons.append("shutting down")
        poller: HealthPoller = self.settings["health_poller"]
        if not poller.first_round.is_set():
            reasons.append("first health poll of the agents not finished")
        body: dict[str, Any] = {"agents_healthy": healthy, "agents_total": known}
        if reasons:
            self.write_json({"status": "not ready", "reasons": reasons, **body}, status=503)
        else:
            self.write_json({"status": "ready", **body})


class HealthHandler(CoordinatorHandler):
    """``application/health+json``; 503 when the status is ``fail``."""

    route = "health"

    def get(self) -> None:
        document = health.document(
            service_id="coordinator", version=__version__,
            description="fleetzip coordinator", checks=self.checks())
        status = 503 if document["status"] == "fail" else 200
        self.write_json(document, status=status, content_type=health.HEALTH_CONTENT_TYPE)

    def checks(self) -> dict[str, list[dict[str, Any]]]:
        known, healthy = self.registry.counts()
        agents_status: health.Status = "pass"
        if known and not healthy:
            agents_status = "fail"
        elif healthy < known or not known:
            agents_status = "warn"
        output = None if known else "no agent is known"
        checks = {
            "agents:healthy": [health.check(agents_status, observed_value=healthy,
                                            observed_unit="agents", output=output)],
            "downloads:active": [health.check("pass", observed_value=self.metrics.active,
                                              observed_unit="downloads")],
        }
        if self.registry.file_error:
            checks["discovery:agentsFile"] = [health.check(
                "warn", output="agents_file is invalid; using the last good list")]
        if self.draining:
            checks["lifecycle:draining"] = [health.check("fail", output="shutting down")]
        return checks


class MetricsHandler(CoordinatorHandler):
    route = "metrics"
    protected = True

    def get(self) -> None:
        self.set_header("Content-Type", self.metrics.content_type)
        self.finish(self.metrics.render())


class ProtectedStaticHandler(BaseHandler, StaticHandler):
    """The page's static files (`coordinator.web.StaticHandler`), behind the page's auth."""

    route = "static"
    protected = True
