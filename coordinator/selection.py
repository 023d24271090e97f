"""The selection parameters of ``/api/plan`` and ``/api/download``, parsed into a `Selection`.

Every problem is a `BadRequest` whose message starts with the parameter's name:

* ``root`` (required): one path segment, the name of a root on the agents;
* ``path``: a file or directory below the root (surrounding ``/`` are ignored);
* ``glob``: relative to ``path`` (or the root); ``*``, ``?``, ``[...]`` and ``**`` as a
  whole segment; no ``..``, no leading ``/``, no backslash; at most
  `common.globs.MAX_GLOB_LENGTH` characters and `common.globs.MAX_GLOB_WILDCARDS` wildcards
  (the agents refuse the same globs);
* ``since``: a duration (``30m``, ``2h``, ``1d``: modified within it), epoch seconds
  (``1700000000``) or an ISO 8601 time (no zone: UTC);
* ``nodes``: comma list of known node names (repeating the parameter works too);
* ``labels``: ``k=v,k2=v2`` — every pair must match the agent's labels;
* ``compression``: ``stored`` or ``deflate`` (default: ``download.compression``);
* ``name``: the archive's file name (no ``/``, ``\\`` or control characters).

Unknown parameters are ignored, so a page may add its own (cache busters).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from common.config import parse_duration
from common.errors import BadRequest
from common.globs import compile_glob
from common.names import check_node_name, check_relative_path
from coordinator.model import Compression, Selection

LABEL_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,62}$")
COMPRESSIONS = ("stored", "deflate")
MAX_NAME = 200


def bad(parameter: str, problem: str) -> BadRequest:
    return BadRequest(f"{parameter}: {problem}", parameter=parameter)


def parse_selection(args: Mapping[str, Sequence[str]], *, known_nodes: Iterable[str],
                    default_compression: Compression, now: float) -> Selection:
    """A `Selection` from query arguments (``{name: [values]}``); `BadRequest` when bad."""
    root = _one(args, "root")
    if not root:
        raise bad("root", "required (the name of a root on the agents)")
    return Selection(
        root=parse_root(root),
        path=parse_path(_one(args, "path")),
        glob=parse_glob(_one(args, "glob")),
        since=parse_since(_one(args, "since"), now),
        nodes=parse_nodes(args.get("nodes", ()), set(known_nodes)),
        labels=parse_labels(_one(args, "labels")),
        compression=parse_compression(_one(args, "compression"), default_compression),
        name=parse_name(_one(args, "name")),
    )


def _one(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = [v for v in args.get(name, ()) if v != ""]
    if len(values) > 1:
        raise bad(name, "given more than once")
    return values[0] if values else None


def parse_root(value: str) -> str:
    try:
        check_relative_path(value)
    except ValueError as exc:
        raise bad("root", str(exc)) from None
    if "/" in value:
        raise bad("root", "a root is a name, not a path (put the rest in 'path')")
    return value


def parse_path(value: str | None) -> str | None:
    if value is None or not value.strip("/"):
        return None
    path = value.strip("/")
    try:
        return check_relative_path(path)
    except ValueError as exc:
        raise bad("path", str(exc)) from None


def parse_glob(value: str | None) -> str | None:
    """The glob as given, checked by the agents' own rules and limits (`common.globs`)."""
    if value is None:
        return None
    try:
        check_relative_path(value)
        compile_glob(value)
    except ValueError as exc:
        raise bad("glob", str(exc)) from None
    return value


def parse_since(value: str | None, now: float) -> float | None:
    """Epoch seconds from a duration, epoch seconds or an ISO 8601 time."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if re.fullmatch(r"\d+(\.\d+)?\s*(ms|s|m|h|d)", text):
        return now - parse_duration(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise bad("since", f"expected a duration like 2h, epoch seconds or an ISO 8601 "
                           f"time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_nodes(values: Sequence[str], known: set[str]) -> tuple[str, ...]:
    names: list[str] = []
    for value in values:
        for name in (n.strip() for n in value.split(",")):
            if not name:
                continue
            try:
                check_node_name(name)
            except ValueError as exc:
                raise bad("nodes", str(exc)) from None
            if name not in names:
                names.append(name)
    unknown = [n for n in names if n not in known]
    if unknown:
        listing = ", ".join(sorted(known)) or "none"
        raise bad("nodes", f"unknown node(s) {', '.join(unknown)} (known: {listing})")
    return tuple(names)


def parse_labels(value: str | None) -> dict[str, str]:
    if value is None:
        return {}
    labels: dict[str, str] = {}
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        key, sep, label = item.partition("=")
        key, label = key.strip(), label.strip()
        if not sep or not LABEL_KEY_RE.match(key):
            raise bad("labels", f"expected k=v,k2=v2, got {item!r}")
        labels[key] = label
    return labels


def parse_compression(value: str | None, default: Compression) -> Compression:
    if value is None:
        return default
    if value not in COMPRESSIONS:
        raise bad("compression", f"must be stored or deflate, got {value!r}")
    return cast(Compression, value)


def parse_name(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_NAME or any(ch in value for ch in "/\\") or value in (".", ".."):
        raise bad("name", "a file name without '/' or '\\', at most 200 characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise bad("name", "control character in the name")
    return value


def query_arguments(raw: Mapping[str, list[bytes]]) -> dict[str, list[str]]:
    """Tornado's ``request.query_arguments`` decoded; undecodable bytes → 400."""
    args: dict[str, list[str]] = {}
    for name, values in raw.items():
        try:
            args[name] = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise bad(name, "not valid UTF-8") from None
    return args
