"""The base of every fleetzip request handler: JSON errors, auth, metrics.

Handlers raise `common.errors.ApiError` subclasses; `write_error` is the one place that
renders them (and anything unexpected) as ``{"error": {"code", "message"}}`` — never a
traceback. Each handler class names its ``route`` for metrics and logs.

App settings read here (all optional):

* ``authenticator`` — an object with ``async authenticate(request)`` (the caller, stored
  as ``current_user``, or None for missing/wrong credentials; it may raise an `ApiError`
  such as 429) and ``challenge`` (the ``WWW-Authenticate`` value); handlers with
  ``protected = True`` call it before their verb method, so a slow check (a password hash
  in a thread) never blocks the event loop.
* ``http_metrics`` — a `common.metrics.HttpMetrics`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any, Protocol

import tornado.web
from tornado.httputil import HTTPServerRequest

from common.errors import ApiError, NotFound, Unauthorized

log = logging.getLogger(__name__)


class Authenticator(Protocol):
    challenge: str

    def authenticate(self, request: HTTPServerRequest) -> Awaitable[object | None]: ...


class TokenAuthenticator:
    """Bearer-token authentication backed by a `common.auth.TokenStore`."""

    challenge = 'Bearer realm="fleetzip"'

    def __init__(self, store: Any) -> None:
        self.store = store

    async def authenticate(self, request: HTTPServerRequest) -> str | None:
        return "token" if self.store.check(request.headers.get("Authorization")) else None


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class BaseHandler(tornado.web.RequestHandler):
    route = "other"
    protected = False

    def prepare(self) -> Awaitable[None] | None:
        return self.require_auth() if self.protected else None

    async def require_auth(self) -> None:
        """Sets ``current_user``; `Unauthorized` when the credentials are missing or wrong."""
        authenticator: Authenticator | None = self.settings.get("authenticator")
        if authenticator is None:
            return
        caller = await authenticator.authenticate(self.request)
        if caller is None:
            raise Unauthorized(
                "missing or invalid credentials",
                headers={"WWW-Authenticate": authenticator.challenge},
            )
        self.current_user = caller

    def write_json(self, body: Any, status: int = 200, content_type: str | None = None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", content_type or "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, separators=(",", ":")) + "\n")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            code, message = exc.code, exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            code = _status_code_name(status_code)
            message = exc.log_message or _phrase(status_code)
            if exc.args and "%" in message:
                message = message % exc.args
        else:
            code = "internal" if status_code >= 500 else _status_code_name(status_code)
            message = _phrase(status_code)
        self.clear_header("Content-Disposition")
        self.clear_header("Content-Range")
        self.clear_header("ETag")
        self.clear_header("Last-Modified")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(error_body(code, message)) + "\n")

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.debug(
                "%s %s -> %d %s", self.request.method, self.request.uri, value.status, value.message
            )
            return
        super().log_exception(typ, value, tb)

    def on_finish(self) -> None:
        metrics = self.settings.get("http_metrics")
        if metrics is not None:
            metrics.observe(
                self.route,
                self.request.method or "",
                self.get_status(),
                self.request.request_time(),
            )


class NotFoundHandler(BaseHandler):
    """Default handler: unknown routes are a JSON 404."""

    route = "unknown"

    def prepare(self) -> None:
        raise NotFound(f"no route for {self.request.path}")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _status_code_name(status: int) -> str:
    return _phrase(status).lower().replace(" ", "_").replace("-", "_")
