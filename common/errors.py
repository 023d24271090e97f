"""The one exception hierarchy of fleetzip, and its mapping to HTTP statuses.

    FleetzipError                  base of everything raised on purpose
    ├── ConfigError                a bad configuration file (exit code 2 at start)
    └── ApiError                   an answer to an HTTP client, rendered as JSON
        ├── BadRequest             400  malformed input, naming the parameter
        ├── Unauthorized           401  missing or wrong credentials
        ├── Forbidden              403
        ├── NotFound               404  no such root, file, node or route
        │   └── UnknownRoot        404  code "unknown_root": the agent has no such root
        ├── PreconditionFailed     412
        ├── PayloadTooLarge        413
        ├── RangeNotSatisfiable    416
        ├── HeaderTooLarge         431  one request header over its limit, named
        ├── TooManyRequests        429  with a Retry-After
        └── Unavailable            503  draining, or nothing healthy to ask

Handlers raise these; `common.web.BaseHandler.write_error` is the one place that turns
them into `{"error": {"code": ..., "message": ...}}` responses.
"""

from __future__ import annotations


class FleetzipError(Exception):
    """Base class of the errors fleetzip raises on purpose."""


class ConfigError(FleetzipError):
    """A configuration problem, named by file, key and problem."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(file, key, problem)
        self.file = file
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.problem}"


class ApiError(FleetzipError):
    """An error answered to an HTTP client as JSON."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status, code = 400, "bad_request"

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class UnknownRoot(NotFound):
    """The agent has no root of that name (the coordinator tells this from a missing path)."""

    code = "unknown_root"


class PreconditionFailed(ApiError):
    status, code = 412, "precondition_failed"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class RangeNotSatisfiable(ApiError):
    status, code = 416, "range_not_satisfiable"


class HeaderTooLarge(ApiError):
    """431 (RFC 6585 §5) for one header field over its limit; the message names it."""

    status, code = 431, "request_header_fields_too_large"

    def __init__(self, message: str, *, header: str) -> None:
        super().__init__(message)
        self.header = header


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class Unavailable(ApiError):
    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        super().__init__(message, headers=headers)
