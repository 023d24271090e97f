"""Query parameters of the agent's routes, parsed strictly: a bad one is a 400 naming it.

Tornado's `get_argument` silently takes the last of repeated values and strips blanks; these
refuse anything but one plain value, so two parts of a chain cannot read a request differently.
"""

from __future__ import annotations

import re

from tornado.web import RequestHandler

from common.errors import BadRequest

MAX_OFFSET = 2**63 - 1  # off_t: the largest offset a read can take
_DIGITS_RE = re.compile(r"[0-9]+")


def single_argument(handler: RequestHandler, name: str) -> str | None:
    """The one value of query parameter *name*, or None when absent; repeated → 400."""
    values = handler.request.query_arguments.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} is given {len(values)} times", parameter=name)
    try:
        return values[0].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} must be ASCII", parameter=name) from None


def integer_argument(
    handler: RequestHandler, name: str, *, maximum: int = MAX_OFFSET
) -> int | None:
    """A non-negative decimal integer of at most ``len(str(maximum))`` digits, up to *maximum*.

    The digit limit is checked before the conversion, so a 5000-digit value costs nothing.
    """
    value = single_argument(handler, name)
    if value is None:
        return None
    if len(value) > len(str(maximum)) or not _DIGITS_RE.fullmatch(value):
        raise BadRequest(
            f"{name} must be a decimal integer of at most {len(str(maximum))} digits",
            parameter=name,
        )
    number = int(value)
    if number > maximum:
        raise BadRequest(f"{name} must be at most {maximum}", parameter=name)
    return number


def flag_argument(handler: RequestHandler, name: str) -> bool:
    """``1``/``true`` or ``0``/``false`` (absent: false)."""
    value = single_argument(handler, name)
    if value is None or value.lower() in ("0", "false"):
        return False
    if value.lower() in ("1", "true"):
        return True
    raise BadRequest(f"{name} must be 1 or 0", parameter=name)
