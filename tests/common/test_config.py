"""The config loader: units, types, and errors that name file and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from common.config import Duration, FieldError, Size, load, parse_duration, parse_listen, parse_size
from common.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0), ("250ms", 0.25),
     ("1.5s", 1.5), (10, 10.0), (0.5, 0.5), ("7", 7.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5 parsecs", "-3s", -1, True, "1h30m"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("64KiB", 65536), ("1MiB", 1 << 20), ("10GB", 10**10), ("1.5KiB", 1536), ("0", 0),
     (4096, 4096), ("512B", 512), ("2kib", 2048), ("3 MB", 3_000_000)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", -5, False, "1XB"])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_listen() -> None:
    assert parse_listen("127.0.0.1:8701") == ("127.0.0.1", 8701)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8701", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


@dataclass(frozen=True)
class Inner:
    timeout: Duration = 3.0
    limit: Size = 0

    def __post_init__(self) -> None:
        if self.limit > 10**12:
            raise FieldError("limit", "too large")


@dataclass(frozen=True)
class Sample:
    name: str
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    paths: dict[str, str] = field(default_factory=dict)
    items: tuple[Inner, ...] = ()
    flag: bool = False
    count: int = 1
    ratio: float | None = None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yml"
    path.write_text(text)
    return path


def test_builds_nested_frozen_values(tmp_path: Path) -> None:
    config = load(Sample, write(tmp_path, """
name: x
mode: b
inner: {timeout: 5m, limit: 1MiB}
paths: {logs: /var/log}
items: [{timeout: 1s}, {}]
flag: true
count: 3
ratio: 2
"""))
    assert config == Sample(
        name="x", mode="b", inner=Inner(300.0, 1 << 20), paths={"logs": "/var/log"},
        items=(Inner(1.0), Inner()), flag=True, count=3, ratio=2.0,
    )
    with pytest.raises(AttributeError):
        config.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nbogus: 1\n", "c.yml: bogus: unknown key"),
        ("mode: a\n", "c.yml: name: required key is missing"),
        ("name: x\nmode: c\n", "c.yml: mode: must be one of 'a', 'b'"),
        ("name: x\ninner: {timeout: soon}\n", "c.yml: inner.timeout: expected a duration"),
        ("name: x\ninner: {limit: 2TB}\n", "c.yml: inner.limit: too large"),
        ("name: x\ninner: [1]\n", "c.yml: inner: expected a mapping, got a list"),
        ("name: x\nitems: [{nope: 1}]\n", "c.yml: items[0].nope: unknown key"),
        ("name: x\nflag: yes please\n", "c.yml: flag: expected true or false"),
        ("name: x\ncount: 1.5\n", "c.yml: count: expected a whole number"),
        ("name: [x]\n", "c.yml: name: expected a string, got a list"),
        ("- a\n- b\n", "c.yml: the top level must be a mapping"),
        ("name: x\n  bad: indent\n", "c.yml: invalid YAML at line 2"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(Sample, write(tmp_path, text))
    assert str(info.value).startswith(str(tmp_path / message))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(Sample, tmp_path / "absent.yml")
