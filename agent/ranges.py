"""Range and conditional-request arithmetic (RFC 9110 §13, §14) as plain values.

Nothing here knows about Tornado: `plan_response` takes the method, the request's
precondition and range headers and the file's validators, and says what to answer —
200 full, 206 one range, 304, 412 or 416. Decisions follow the order of RFC 9110 §13.2.2.

Only a single byte range is served. A request for several ranges is answered 200 with the
whole file: RFC 9110 §14.2 lets a server ignore ``Range``, and fleetzip clients only ever
ask for one. A malformed ``Range`` (or another unit) is ignored likewise (→ 200).

Every header here is untrusted input and every parse is linear, with no regex (a
backtracking ``\\s*(\\d*)\\s*`` froze the agent for seconds on ``bytes=0-`` and 30,000
spaces, issue 11 S4): a header longer than `MAX_CONDITION_HEADER` is refused with 431 naming
it; a byte position is compared as digits and never given to ``int()`` when it has more than
`MAX_POSITION_DIGITS` digits (such a position is beyond any file: a 5,000-digit one used to
raise inside ``int()`` and give a 500).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, fields

from common.errors import HeaderTooLarge

# One byte range needs about 50 characters ("bytes=" and two 19-digit numbers), an ETag
# list a few hundred, a date 29. 4096 is generous for any client and keeps every parse
# here a few microseconds long.
MAX_CONDITION_HEADER = 4096
# 2**63 - 1, the largest file size, has 19 digits: a position with more is past the end of
# any file, so it is compared as text and replaced by `_BEYOND_ANY_FILE` for arithmetic.
MAX_POSITION_DIGITS = 19
_BEYOND_ANY_FILE = 2**63
_OWS = " \t"  # optional whitespace, RFC 9110 §5.6.3


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

    def check_lengths(self, limit: int = MAX_CONDITION_HEADER) -> None:
        """`HeaderTooLarge` (431) naming the first header longer than *limit* characters."""
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and len(value) > limit:
                header = item.name.replace("_", "-").title()
                raise HeaderTooLarge(
                    f"the {header} header has {len(value)} characters, "
                    f"at most {limit} are accepted",
                    header=header,
                )


def parse_http_date(value: str | None) -> int | None:
    """An HTTP date as whole epoch seconds; None when absent or invalid (then ignored)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        if parsed is None or parsed.tzinfo is None:
            return None
        return int(parsed.timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):  # a year of 20 digits overflows
        return None


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
    Grammar (RFC 9110 §14.1.1): ``bytes=first-[last]`` or ``bytes=-suffix``; whitespace
    around the parts is tolerated. Linear in the header's length.
    """
    if not header:
        return None
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip(_OWS).lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.partition("-")
    first, last = _position(first_text), _position(last_text)
    if not dash or first is None or last is None or first == last == "":
        return None
    if first == "":  # suffix: the last N bytes
        suffix = _value(last)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size
    if last != "" and _less(last, first):
        return None  # invalid: ignored, RFC 9110 §14.1.1
    start = _value(first)
    if start >= size:
        return False
    stop = size if last == "" else min(_value(last) + 1, size)
    return start, stop


def _position(text: str) -> str | None:
    """A byte position's digits without leading zeros ("" when absent), None if not digits."""
    digits = text.strip(_OWS)
    if not digits:
        return ""
    if not (digits.isascii() and digits.isdigit()):
        return None
    return digits.lstrip("0") or "0"


def _less(a: str, b: str) -> bool:
    """Numeric ``a < b`` for digit strings without leading zeros, of any length."""
    return (len(a), a) < (len(b), b)


def _value(digits: str) -> int:
    return int(digits) if len(digits) <= MAX_POSITION_DIGITS else _BEYOND_ANY_FILE


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
    """The answer to *method* for a file of *size* bytes, given the request's *cond*.

    Raises `HeaderTooLarge` when one of the headers is over `MAX_CONDITION_HEADER`.
    """
    cond.check_lengths()
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
