"""Range and conditional-request arithmetic (RFC 9110 §13, §14) as plain values.

Nothing here knows about Tornado: `plan_response` takes the method, the request's
precondition and range headers and the file's validators, and says what to answer —
200 full, 206 one range, 304, 412 or 416. Decisions follow the order of RFC 9110 §13.2.2.

Only a single byte range is served. A request for several ranges is answered 200 with the
whole file: RFC 9110 §14.2 lets a server ignore ``Range``, and fleetzip clients only ever
ask for one. A malformed ``Range`` (or another unit) is ignored likewise (→ 200).
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Validators:
    """What identifies one version of a file: a strong ETag and its modification time."""

    etag: str  # with its quotes: '"abc"'
    mtime: int  # whole seconds since the epoch (Last-Modified has second precision)


@dataclass(frozen=True)
class Plan:
    """What to answer: a status and, for 200/206, the byte span ``[start, stop)``."""

    status: int
    start: int = 0
    stop: int = 0

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Conditions:
    """The request headers that can change the answer (absent = None)."""

    range: str | None = None
    if_range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None


def parse_http_date(value: str | None) -> int | None:
    """An HTTP date as whole epoch seconds; None when absent or invalid (then ignored)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())


def _etags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def strong_match(header: str, etag: str) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison: both tags strong and equal (``*`` matches)."""
    tags = _etags(header)
    return "*" in tags or etag in tags


def weak_match(header: str, etag: str) -> bool:
    """Weak comparison (used by If-None-Match): ``W/`` prefixes are ignored."""
    bare = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == bare for tag in _etags(header))


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """The span ``(start, stop)`` of a single byte range over *size* bytes.

    None: no usable range (absent, malformed, another unit, several ranges) → send all.
    False: a valid range that no byte of the file satisfies → 416.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored, RFC 9110 §14.1.1
    if start >= size:
        return False
    stop = size if last == "" else min(int(last) + 1, size)
    return start, stop


def _if_range_holds(if_range: str, validators: Validators) -> bool:
    """RFC 9110 §13.1.5: an entity tag compares strongly; a date must equal Last-Modified."""
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and value == validators.etag
    return parse_http_date(value) == validators.mtime


def _precondition(method: str, cond: Conditions, v: Validators) -> int | None:
    """412 or 304 when a precondition decides the answer (RFC 9110 §13.2.2 steps 1-4)."""
    if cond.if_match is not None:
        if not strong_match(cond.if_match, v.etag):
            return 412
    else:
        since = parse_http_date(cond.if_unmodified_since)
        if since is not None and v.mtime > since:
            return 412
    if cond.if_none_match is not None:
        if weak_match(cond.if_none_match, v.etag):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD"):
        since = parse_http_date(cond.if_modified_since)
        if since is not None and v.mtime <= since:
            return 304
    return None


def plan_response(method: str, cond: Conditions, v: Validators, size: int) -> Plan:
    """The answer to *method* for a file of *size* bytes, given the request's *cond*."""
    decided = _precondition(method, cond, v)
    if decided is not None:
        return Plan(decided)
    # Range handling is defined for GET only (RFC 9110 §14.2); HEAD describes the full body.
    if method != "GET" or cond.range is None:
        return Plan(200, 0, size)
    if cond.if_range is not None and not _if_range_holds(cond.if_range, v):
        return Plan(200, 0, size)
    span = parse_range(cond.range, size)
    if span is None:
        return Plan(200, 0, size)
    if span is False:
        return Plan(416)
    assert not isinstance(span, bool)
    return Plan(206, span[0], span[1])
