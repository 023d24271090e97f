"""The client's one HTTP layer: credentials, TLS, timeouts, and error translation.

Every lower-level failure (refused connection, timeout, TLS, an HTTP error status) is turned
into a `ClientError` here, once, with one line an operator can act on; the commands print
that line and exit 2. Nothing above this module sees a socket exception.

    ClientError                      one clear line; exit code 2 for get/agents
    ├── ConnectFailed                no answer: refused, timed out, unresolvable, TLS
    └── HttpStatusError              the server answered >= 400 (message from its JSON body)

Plain ``http.client`` is used (no proxy environment, no redirects): responses are read in
chunks, so memory stays bounded whatever the body size.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from common import __version__

USER_AGENT = f"fleetzip-client/{__version__}"
ERROR_BODY_LIMIT = 64 * 1024  # an error body is a short JSON document; never read more
TOKEN_ENV = "FLEETZIP_TOKEN"
PASSWORD_ENV = "FLEETZIP_PASSWORD"

FailureKind = Literal["connect", "timeout", "resolve", "tls", "protocol"]


class ClientError(Exception):
    """A failure the user must see as one line (``fleetzip: error: <message>``)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectFailed(ClientError):
    """No usable answer: the connection failed, timed out or broke mid-body."""

    def __init__(self, message: str, kind: FailureKind) -> None:
        super().__init__(message)
        self.kind = kind


class HttpStatusError(ClientError):
    """The server answered with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """What the client sends to the coordinator: a bearer token or a Basic user, or nothing."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.user is not None:
            pair = f"{self.user}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return {}


@dataclass(frozen=True)
class HttpOptions:
    """How to reach a server: credentials, per-operation timeout (s), TLS trust."""

    credentials: Credentials = field(default_factory=Credentials)
    timeout: float = 30.0
    cafile: str | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def read_token_file(path: str) -> str:
    """The first token in *path* (blank and ``#`` lines skipped); ClientError when unusable."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ClientError(f"cannot read token file {path}: {reason}") from None
    for line in lines:
        if line.strip() and not line.startswith("#"):
            return line.strip()
    raise ClientError(f"token file {path} holds no token")


def credentials_from(
    token_file: str | None,
    user: str | None,
    env: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> Credentials:
    """Credentials from ``--token-file`` / ``FLEETZIP_TOKEN`` / ``--user`` + ``FLEETZIP_PASSWORD``.

    Tokens are never taken from a plain argument: they would show in ``ps`` and shell history.
    Without ``FLEETZIP_PASSWORD``, *prompt* (e.g. `getpass.getpass` on a terminal) asks.
    """
    env = os.environ if env is None else env
    if token_file and user:
        raise ClientError("use either --token-file or --user, not both")
    if token_file:
        return Credentials(token=read_token_file(token_file))
    if user is not None:
        password = env.get(PASSWORD_ENV)
        if password is None and prompt is not None:
            password = prompt(f"password for {user}: ")
        if password is None:
            raise ClientError(f"--user {user} needs the password in the {PASSWORD_ENV} variable")
        return Credentials(user=user, password=password)
    token = env.get(TOKEN_ENV, "").strip()
    return Credentials(token=token or None)


def join_url(base: str, path: str) -> str:
    """*base* (``http://host:port`` with or without a trailing ``/``) plus *path*."""
    return base.rstrip("/") + path


def _connection(url: str, options: HttpOptions) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"not an http:// or https:// URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        port = parts.port
    except ValueError:
        raise ClientError(f"bad port in URL {url!r}") from None
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            parts.hostname, port, timeout=options.timeout, context=options.ssl_context()
        ), target
    return http.client.HTTPConnection(parts.hostname, port, timeout=options.timeout), target


def describe_failure(exc: BaseException, url: str, timeout: float) -> ConnectFailed:
    """The one-line `ConnectFailed` for a low-level exception raised while talking to *url*."""
    where = origin(url)
    if isinstance(exc, TimeoutError | socket.timeout):
        return ConnectFailed(f"no answer from {where} within {timeout:g}s (timed out)", "timeout")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"cannot resolve the host of {where}: {exc.strerror}", "resolve")
    if isinstance(exc, ssl.SSLError):
        return ConnectFailed(f"TLS error with {where}: {exc.reason or exc}", "tls")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(f"cannot connect to {where}: connection refused", "connect")
    if isinstance(exc, http.client.IncompleteRead):
        return ConnectFailed(f"connection to {where} closed mid-response", "protocol")
    if isinstance(exc, ConnectionError | http.client.RemoteDisconnected):
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return ConnectFailed(f"connection to {where} broke: {reason}", "protocol")
    if isinstance(exc, http.client.HTTPException):
        return ConnectFailed(f"bad HTTP answer from {where}: {type(exc).__name__}", "protocol")
    reason = getattr(exc, "strerror", None) or str(exc)
    return ConnectFailed(f"cannot connect to {where}: {reason}", "connect")


def origin(url: str) -> str:
    """``scheme://host:port`` of *url*: how errors name a server."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


@contextlib.contextmanager
def open_url(
    url: str,
    options: HttpOptions,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    check_status: bool = True,
) -> Iterator[http.client.HTTPResponse]:
    """An open response to *method url*; the body is for the caller to read in pieces.

    With *check_status* a status >= 400 raises `HttpStatusError` carrying the server's own
    message. Transport failures raise `ConnectFailed` — also those raised while the caller
    reads the body inside the ``with`` block.
    """
    connection, target = _connection(url, options)
    sent = {"User-Agent": USER_AGENT, **options.credentials.headers(), **(headers or {})}
    try:
        connection.request(method, target, headers=sent)
        response = connection.getresponse()
        if check_status and response.status >= 400:
            raise status_error(response, url)
        yield response
    except TRANSPORT_ERRORS as exc:
        raise describe_failure(exc, url, options.timeout) from exc
    finally:
        connection.close()


def status_error(response: http.client.HTTPResponse, url: str) -> HttpStatusError:
    """The `HttpStatusError` for an error *response*, with the server's own message."""
    status = response.status
    message = server_message(response.read(ERROR_BODY_LIMIT)) or response.reason
    where = origin(url)
    if status == 401:
        hint = "check --token-file, FLEETZIP_TOKEN or --user/FLEETZIP_PASSWORD"
        return HttpStatusError(f"{where} refused the credentials (401 {message}); {hint}", status)
    if status == 403:
        return HttpStatusError(f"{where} forbids this request (403 {message})", status)
    retry = response.getheader("Retry-After")
    suffix = f"; retry after {retry}s" if retry else ""
    return HttpStatusError(f"{where} answered {status}: {message}{suffix}", status)


def server_message(body: bytes) -> str:
    """The ``error.message`` of a fleetzip JSON error body, else its first line of text."""
    try:
        doc = json.loads(body)
        message = doc["error"]["message"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    text = body.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0][:200] if text else ""


def get_json(url: str, options: HttpOptions) -> object:
    """GET *url* and parse its JSON body (bounded); ClientError on any failure."""
    with open_url(url, options, headers={"Accept": "application/json"}) as response:
        body = response.read(16 * 1024 * 1024)  # agent lists; far above any real one
    try:
        return json.loads(body)
    except ValueError:
        raise ClientError(f"{origin(url)} did not answer JSON at {urlsplit(url).path}") from None
