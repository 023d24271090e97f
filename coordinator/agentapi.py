"""HTTP calls from the coordinator to agents: URLs, auth header, TLS, timeouts, errors.

Everything an agent answers is untrusted; this module only turns answers into Python
values or `AgentError`s, and callers check the values (paths, sizes) before using them.

    AgentError                the agent could not answer what we asked
    ├── AgentUnreachable      refused, reset, TLS failure or timeout (state "failed")
    └── AgentStatusError      it answered with a non-2xx status (``.status``)

The HTTP client is one `AbortableHTTPClient` per app (``force_instance=True``, so it
never shares a queue with another app in the same process). Its `abort` closes the agent
connection of one fetch at once — how a client that leaves stops its agent fetch.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from tornado.http1connection import HTTP1Connection
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.iostream import IOStream
from tornado.netutil import DefaultLoopResolver, Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection

from common import __version__
from common.auth import TokenStore
from coordinator.config import CoordinatorConfig
from coordinator.model import AgentRef

log = logging.getLogger(__name__)

MAX_BODY_SIZE = 1 << 62  # streamed file bodies: no limit (memory is bounded by the stream)
MAX_JSON_SIZE = 256 * 1024 * 1024  # a listing held in memory while planning
USER_AGENT = f"fleetzip-coordinator/{__version__}"
BODY_CHUNK_SIZE = 64 * 1024  # tornado's own default read size of a response body


class AgentError(Exception):
    """An agent could not answer; ``str()`` is the reason recorded for the operator."""

    state = "failed"


class AgentUnreachable(AgentError):
    pass


class AgentStatusError(AgentError):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if message else f"HTTP {status}")
        self.status = status
        self.code = code  # the ``error.code`` of the agent's JSON answer, when it has one


class ClientGone(Exception):
    """Raised into an agent fetch whose client left."""


class _TrackedConnection(_HTTPConnection):
    """An `_HTTPConnection` its client can find again, to abort it (see `abort`)."""

    def __init__(self, client: AbortableHTTPClient, request: Any, *args: Any) -> None:
        original = getattr(request, "request", request)
        client.live[id(original)] = self
        release = args[0]

        def release_and_forget() -> None:
            client.live.pop(id(original), None)
            release()

        super().__init__(client, request, release_and_forget, *args[1:])

    def _create_connection(self, stream: IOStream) -> HTTP1Connection:
        """Bodies are read (and handed to ``streaming_callback``) in pieces of the client's
        ``body_chunk_size`` instead of tornado's fixed 64 KiB: fewer Python steps per byte."""
        connection = super()._create_connection(stream)
        size = getattr(self.client, "body_chunk_size", BODY_CHUNK_SIZE)
        connection.params.chunk_size = size
        stream.read_chunk_size = size
        return connection


class AbortableHTTPClient(SimpleAsyncHTTPClient):
    """`SimpleAsyncHTTPClient` plus `abort(request)`.

    Tornado has no public way to cancel a fetch that waits for a silent server; this
    subclass remembers each request's connection and fails it on demand, which closes the
    socket (tested against tornado 6.6).
    """

    live: dict[int, Any]
    body_chunk_size: int

    def initialize(self, *args: Any, body_chunk_size: int = BODY_CHUNK_SIZE,
                   **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.live = {}
        self.body_chunk_size = body_chunk_size

    def _connection_class(self) -> type:
        return _TrackedConnection

    def abort(self, request: HTTPRequest, reason: str = "client left") -> bool:
        """Fail *request*'s fetch now (a 599 with `ClientGone`); False if not running."""
        connection = self.live.pop(id(request), None)
        if connection is None:
            return False
        error = ClientGone(reason)
        connection._handle_exception(ClientGone, error, None)
        return True


class NumericHostResolver(Resolver):
    """IP literals are answered at once (``AI_NUMERICHOST``: no DNS, cannot block); names go
    to tornado's default resolver, which runs ``getaddrinfo`` in a thread.

    Agents listed by address (``10.0.0.5:8701``, usual in file_sd) so cost no thread hop
    per request: that hop was a quarter of the coordinator's CPU polling and downloading
    from 500 agents (py-spy under bench/fleet_scale.py).
    """

    def initialize(self, fallback: Resolver | None = None) -> None:
        self.fallback = fallback or DefaultLoopResolver()

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC,
                      ) -> list[tuple[int, Any]]:
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0,
                                       socket.AI_NUMERICHOST)
        except (socket.gaierror, UnicodeError):
            return await self.fallback.resolve(host, port, family)  # a name
        return [(fam, address) for fam, _, _, _, address in infos]

    def close(self) -> None:
        self.fallback.close()


def make_http_client(config: CoordinatorConfig) -> AbortableHTTPClient:
    downloads = config.download.parallel * config.download.max_concurrent
    client = AbortableHTTPClient(
        force_instance=True,
        resolver=NumericHostResolver(),
        max_clients=config.health.concurrency + downloads + 64,
        max_body_size=MAX_BODY_SIZE,
        max_buffer_size=MAX_JSON_SIZE,
        body_chunk_size=config.download.chunk_size,
    )
    return client


def agent_url(base: str, segments: Sequence[str],
              query: Mapping[str, str] | None = None) -> str:
    """The URL of *segments* on the agent at *base*, built from parsed parts.

    Only the scheme, host and port of *base* are used (and its path, which only an
    operator's ``agents`` / ``agents_file`` can give: an agent behind a reverse proxy);
    its user info, query and fragment never are. Each segment is percent-encoded on its
    own, so no client input can add a ``?``, a ``#`` or a segment of its own. Registered
    agents are ``scheme://host:port`` only (`common.origin`).
    """
    parts = urllib.parse.urlsplit(base)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = parts.path.rstrip("/") + "".join(
        "/" + urllib.parse.quote(segment, safe="") for segment in segments)
    encoded = urllib.parse.urlencode(query) if query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, encoded, ""))


class AgentApi:
    """Builds requests to agents and reads their JSON answers."""

    def __init__(self, config: CoordinatorConfig,
                 http_client: AsyncHTTPClient | None = None) -> None:
        self.config = config
        self.client = http_client or make_http_client(config)
        self.token = TokenStore.open(config.agent_token_file)

    # -- building requests ------------------------------------------------------------

    def url(self, agent: AgentRef, route: str, root: str | None = None,
            path: str | None = None, query: Mapping[str, str] | None = None) -> str:
        """``{agent}/{route}[/{root}[/{path}]][?query]`` (see `agent_url`)."""
        segments = [route]
        if root is not None:
            segments.append(root)
            if path:
                segments.extend(path.strip("/").split("/"))
        return agent_url(agent.url, segments, query)

    def file_url(self, agent: AgentRef, root: str, path: str) -> str:
        return self.url(agent, "files", root, path)

    def auth_headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.token.tokens:
            headers["Authorization"] = f"Bearer {self.token.tokens[0]}"
        return headers

    def request(self, url: str, *, method: str = "GET",
                headers: Mapping[str, str] | None = None,
                connect_timeout: float | None = None, request_timeout: float | None = None,
                **kwargs: Any) -> HTTPRequest:
        """An `HTTPRequest` to an agent with the agent token, TLS settings and timeouts.

        *request_timeout* bounds the whole exchange (0: unbounded, for streams).
        Redirects are not followed: an agent has no reason to send one.
        """
        tls = self.config.agent_tls
        timeout = self.config.download.connect_timeout
        return HTTPRequest(
            url,
            method=method,
            headers={**self.auth_headers(), **(headers or {})},
            connect_timeout=connect_timeout if connect_timeout is not None else timeout,
            request_timeout=request_timeout if request_timeout is not None else timeout,
            follow_redirects=False,
            validate_cert=tls.verify,
            ca_certs=tls.ca,
            client_cert=tls.cert,
            client_key=tls.key,
            decompress_response=False,
            **kwargs,
        )

    def abort(self, request: HTTPRequest, reason: str = "client left") -> bool:
        abort = getattr(self.client, "abort", None)
        return bool(abort(request, reason)) if abort is not None else False

    # -- calls -----------------------------------------------------------------------

    async def fetch(self, request: HTTPRequest) -> HTTPResponse:
        """The response (any status); `AgentUnreachable` when there is none."""
        try:
            response = await self.client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError, ValueError) as exc:
            raise AgentUnreachable(f"unreachable: {exc}") from exc
        if response.code == 599:
            raise AgentUnreachable(f"unreachable: {_describe(response.error)}")
        return response

    async def get_json(self, request: HTTPRequest) -> Any:
        response = await self.fetch(request)
        if not 200 <= response.code < 300:
            raise AgentStatusError(response.code, _error_message(response), _error_code(response))
        try:
            return json.loads(response.body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested too deep
            raise AgentError(f"invalid JSON from agent: {exc}") from exc

    async def list(self, agent: AgentRef, root: str, path: str | None = None, *,
                   glob: str | None = None, since: float | None = None,
                   recursive: bool = False, timeout: float | None = None) -> Any:
        """The agent's ``/list`` answer (a dict, unchecked)."""
        query: dict[str, str] = {}
        if glob:
            query["glob"] = glob
        if since is not None:
            query["since"] = repr(since)
        if recursive:
            query["recursive"] = "true"
        url = self.url(agent, "list", root, path, query)
        idle = timeout if timeout is not None else self.config.download.idle_timeout
        return await self.get_json(self.request(url, request_timeout=idle))

    async def readyz(self, agent: AgentRef, timeout: float) -> tuple[bool, str | None]:
        """(ready, reason when not); raises `AgentUnreachable` when it does not answer."""
        request = self.request(self.url(agent, "readyz"), connect_timeout=timeout,
                               request_timeout=timeout)
        response = await self.fetch(request)
        if response.code == 200:
            return True, None
        reasons = _json_field(response, "reasons")
        if isinstance(reasons, list) and reasons:
            return False, "not ready: " + "; ".join(str(r) for r in reasons)
        return False, f"not ready: HTTP {response.code}"

    async def info(self, agent: AgentRef, timeout: float) -> dict[str, Any]:
        request = self.request(self.url(agent, "info"), connect_timeout=timeout,
                               request_timeout=timeout)
        body = await self.get_json(request)
        if not isinstance(body, dict):
            raise AgentError("invalid /info answer: not an object")
        return body

    def reload(self) -> bool:
        return self.token.reload()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no response"
    text = str(error) or type(error).__name__
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return text


def _json_field(response: HTTPResponse, name: str) -> Any:
    try:
        body = json.loads(response.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return body.get(name) if isinstance(body, dict) else None


def _error_code(response: HTTPResponse) -> str | None:
    """The ``error.code`` of a fleetzip JSON error body, else None."""
    error = _json_field(response, "error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _error_message(response: HTTPResponse) -> str:
    """The ``error.message`` of a fleetzip JSON error body, else the reason phrase."""
    error = _json_field(response, "error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    return response.reason or ""
