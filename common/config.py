"""YAML configuration parsed once into frozen dataclasses.

A service describes its file as dataclasses; `load(cls, path)` reads the YAML and builds
them, checking every key. Field types drive the conversion:

* ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``, ``X | None``;
* ``Duration`` (``30s``, ``5m``, ``2h``, ``250ms`` or a number of seconds) → float seconds;
* ``Size`` (``64KiB``, ``1MiB``, ``10GB`` or a number of bytes) → int bytes;
* ``dict[str, X]``, ``tuple[X, ...]`` and nested dataclasses.

Any problem becomes a `ConfigError` naming the file, the dotted key and what is wrong.
A dataclass may check its own values in ``__post_init__`` by raising `FieldError`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from common.errors import ConfigError

T = TypeVar("T")


class _Unit:
    """Marker carried by `Annotated` for values with a unit."""

    def __init__(self, name: str) -> None:
        self.name = name


DURATION = _Unit("duration")
SIZE = _Unit("size")
Duration = Annotated[float, DURATION]
Size = Annotated[int, SIZE]


class FieldError(ValueError):
    """Raised by a dataclass's ``__post_init__`` to blame one of its keys."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_duration(value: object) -> float:
    """``30s`` → 30.0; ``5m`` → 300.0; a bare number is seconds. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m or 2h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like 30s, 5m or 2h, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: object) -> int:
    """``64KiB`` → 65536; ``10GB`` → 10**10; a bare number is bytes. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 64KiB, 1MiB or 10GB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value!r}")
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"expected a size like 64KiB, 1MiB or 10GB, got {value!r}")
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in *path*; a missing file, bad syntax or a non-mapping → ConfigError."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(name, "", f"invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(name, "", "the top level must be a mapping of keys to values")
    return data


def load(cls: type[T], path: str | Path) -> T:
    """Read *path* and build a *cls* dataclass from it."""
    return build(cls, read_yaml(path), file=str(path))


def build(cls: type[T], data: Any, *, file: str, key: str = "") -> T:
    """Build dataclass *cls* from the mapping *data*; *key* is its dotted place in the file."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, key, f"expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise ConfigError(file, _join(key, unknown[0]), f"unknown key (known keys: {allowed})")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in data:
            values[name] = convert(hints[name], data[name], file=file, key=_join(key, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(file, _join(key, name), "required key is missing")
    try:
        return cls(**values)
    except FieldError as exc:
        raise ConfigError(file, _join(key, exc.key), exc.problem) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(file, key, str(exc)) from None


def convert(hint: Any, value: Any, *, file: str, key: str) -> Any:
    """Convert one YAML value to the Python type *hint* describes."""
    origin, args = get_origin(hint), get_args(hint)
    try:
        if origin is Annotated:
            unit = args[1]
            if unit is DURATION:
                return parse_duration(value)
            if unit is SIZE:
                return parse_size(value)
            return convert(args[0], value, file=file, key=key)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return convert(inner[0], value, file=file, key=key)
        if origin is Literal:
            if value not in args:
                choices = ", ".join(repr(a) for a in args)
                raise ValueError(f"must be one of {choices}, got {value!r}")
            return value
        if dataclasses.is_dataclass(hint):
            return build(hint, value, file=file, key=key)  # type: ignore[arg-type]
        if origin is dict:
            return _convert_dict(args, value, file=file, key=key)
        if origin is tuple:
            return _convert_tuple(args, value, file=file, key=key)
        return _convert_scalar(hint, value)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(file, key, str(exc)) from None


def _convert_dict(args: tuple[Any, ...], value: Any, *, file: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {_kind(value)}")
    return {
        str(k): convert(args[1], v, file=file, key=_join(key, str(k))) for k, v in value.items()
    }


def _convert_tuple(args: tuple[Any, ...], value: Any, *, file: str, key: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {_kind(value)}")
    return tuple(
        convert(args[0], item, file=file, key=f"{key}[{i}]") for i, item in enumerate(value)
    )


def _convert_scalar(hint: Any, value: Any) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"expected a string, got {_kind(value)}")
        return str(value)
    raise TypeError(f"unsupported config type {hint!r}")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8701"`` → ("127.0.0.1", 8701); ``"[::1]:80"`` works too. Raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)
