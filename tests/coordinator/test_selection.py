"""``/api/plan`` and ``/api/download`` selection parameters at their edges, with the exact
message a user sees for each refusal."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import pytest

from common.errors import BadRequest
from coordinator.model import Selection
from coordinator.selection import parse_selection, query_arguments

NOW = 1_700_000_000.0


def select(args: Mapping[str, Sequence[str]], default: str = "stored") -> Selection:
    return parse_selection(args, known_nodes=["n1", "n2", "web-3"],
                           default_compression=default, now=NOW)  # type: ignore[arg-type]


def one(**args: str) -> Selection:
    return select({"root": ["logs"], **{k: [v] for k, v in args.items()}})


def refusal(args: Mapping[str, Sequence[str]]) -> tuple[str | None, str]:
    with pytest.raises(BadRequest) as caught:
        select(args)
    return caught.value.parameter, caught.value.message


def test_defaults() -> None:
    selection = one()
    assert selection == Selection(root="logs")
    assert (selection.path, selection.glob, selection.since, selection.nodes) == (
        None, None, None, ())
    assert (dict(selection.labels), selection.compression, selection.name) == ({}, "stored", None)
    assert select({"root": ["logs"]}, default="deflate").compression == "deflate"


@pytest.mark.parametrize(("args", "expected"), [
    ({}, ("root", "root: required (the name of a root on the agents)")),
    ({"root": [""]}, ("root", "root: required (the name of a root on the agents)")),
    ({"root": ["a", "b"]}, ("root", "root: given more than once")),
    ({"root": ["a/b"]},
     ("root", "root: a root is a name, not a path (put the rest in 'path')")),
    ({"root": [".."]}, ("root", "root: path segment '..' not allowed")),
    ({"root": ["logs"], "path": ["a", "b"]}, ("path", "path: given more than once")),
    ({"root": ["logs"], "path": ["a/../b"]}, ("path", "path: path segment '..' not allowed")),
    ({"root": ["logs"], "path": ["a\\b"]}, ("path", "path: backslash in path")),
])
def test_root_and_path_refusals(args: Mapping[str, Sequence[str]],
                                expected: tuple[str, str]) -> None:
    assert refusal(args) == expected


def test_empty_values_count_as_absent() -> None:
    assert select({"root": ["", "logs", ""], "path": [""], "glob": [""]}) == Selection("logs")


@pytest.mark.parametrize(("path", "expected"), [
    ("sub", "sub"), ("/sub/", "sub"), ("//a/b//", "a/b"), ("/", None), ("///", None)])
def test_path_surrounding_slashes_are_ignored(path: str, expected: str | None) -> None:
    assert one(path=path).path == expected


@pytest.mark.parametrize("glob", ["*.log", "**", "**/*.log", "a/**/b", "[ab]*", "[]]x",
                                  "[!a]", "[[a]", "x[a-z]y[0-9]"])
def test_good_globs(glob: str) -> None:
    assert one(glob=glob).glob == glob


@pytest.mark.parametrize(("glob", "message"), [
    ("a**", "glob: '**' must be a whole path segment, not 'a**'"),
    ("x/**b/y", "glob: '**' must be a whole path segment, not '**b'"),
    ("[ab", "glob: unclosed '[' in '[ab'"),
    ("[]", "glob: unclosed '[' in '[]'"),  # a ']' right after '[' is a member, not the end
    ("a][", "glob: unclosed '[' in 'a]['"),
    ("ok/[x", "glob: unclosed '[' in '[x'"),
    ("/etc/*", "glob: absolute path"),
    ("../*", "glob: path segment '..' not allowed"),
])
def test_bad_globs(glob: str, message: str) -> None:
    assert refusal({"root": ["logs"], "glob": [glob]}) == ("glob", message)


@pytest.mark.parametrize(("since", "expected"), [
    ("1700000000", 1_700_000_000.0),
    ("12.5", 12.5),
    (" 42 ", 42.0),
    ("30m", NOW - 1800),
    ("2h", NOW - 7200),
    ("2 h", NOW - 7200),
    ("1d", NOW - 86_400),
    ("1.5s", NOW - 1.5),
    ("500ms", NOW - 0.5),
    ("2023-11-14T22:13:20", 1_700_000_000.0),  # no zone: UTC
    ("2023-11-14T22:13:20Z", 1_700_000_000.0),
    ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
])
def test_since(since: str, expected: float) -> None:
    assert one(since=since).since == expected


@pytest.mark.parametrize("since", ["yesterday", "2h30", "-5m", "1e9", "2 weeks"])
def test_bad_since(since: str) -> None:
    assert refusal({"root": ["logs"], "since": [since]}) == (
        "since", "since: expected a duration like 2h, epoch seconds or an ISO 8601 time, "
                 f"got {since!r}")


def test_nodes() -> None:
    assert one(nodes="n1").nodes == ("n1",)
    assert select({"root": ["logs"], "nodes": ["n2, n1", "n2,,web-3", " "]}).nodes == (
        "n2", "n1", "web-3")  # order kept, duplicates and blanks dropped


@pytest.mark.parametrize(("nodes", "message"), [
    ("n1,zz", "nodes: unknown node(s) zz (known: n1, n2, web-3)"),
    ("zz,yy,zz", "nodes: unknown node(s) zz, yy (known: n1, n2, web-3)"),
    ("-x", "nodes: invalid node name '-x': use 1-63 letters, digits, '.', '_' or '-', "
           "starting with a letter or digit"),
])
def test_bad_nodes(nodes: str, message: str) -> None:
    assert refusal({"root": ["logs"], "nodes": [nodes]}) == ("nodes", message)


def test_unknown_node_with_no_known_nodes() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_selection({"root": ["logs"], "nodes": ["a"]}, known_nodes=[],
                        default_compression="stored", now=NOW)
    assert caught.value.message == "nodes: unknown node(s) a (known: none)"


def test_labels() -> None:
    assert dict(one(labels="env=prod").labels) == {"env": "prod"}
    assert dict(one(labels=" env = prod , ,rack=r1,empty=,k.x/y-z=a=b").labels) == {
        "env": "prod", "rack": "r1", "empty": "", "k.x/y-z": "a=b"}
    assert dict(one(labels="_a=1").labels) == {"_a": "1"}
    assert dict(one(labels="a" * 63 + "=1").labels) == {"a" * 63: "1"}


@pytest.mark.parametrize("labels", ["novalue", "=x", "1a=b", "a b=c", "a" * 64 + "=1", "-a=1"])
def test_bad_labels(labels: str) -> None:
    item = labels.strip()
    assert refusal({"root": ["logs"], "labels": [labels]}) == (
        "labels", f"labels: expected k=v,k2=v2, got {item!r}")


def test_compression() -> None:
    assert one(compression="deflate").compression == "deflate"
    assert one(compression="stored").compression == "stored"
    assert refusal({"root": ["logs"], "compression": ["zip"]}) == (
        "compression", "compression: must be stored or deflate, got 'zip'")


@pytest.mark.parametrize("name", ["night.zip", "a" * 200, "ü b.zip", "..x", "x."])
def test_good_names(name: str) -> None:
    assert one(name=name).name == name


@pytest.mark.parametrize(("name", "message"), [
    ("a" * 201, "name: a file name without '/' or '\\', at most 200 characters"),
    ("a/b", "name: a file name without '/' or '\\', at most 200 characters"),
    ("a\\b", "name: a file name without '/' or '\\', at most 200 characters"),
    (".", "name: a file name without '/' or '\\', at most 200 characters"),
    ("..", "name: a file name without '/' or '\\', at most 200 characters"),
    ("a\x1fb", "name: control character in the name"),
    ("a\x7f", "name: control character in the name"),
    ("\r\nX: y", "name: control character in the name"),
])
def test_bad_names(name: str, message: str) -> None:
    assert refusal({"root": ["logs"], "name": [name]}) == ("name", message)


def test_query_arguments_decode_utf8_or_name_the_parameter() -> None:
    assert query_arguments({"path": [b"\xc3\xa9t\xc3\xa9"], "nodes": [b"a", b"b"]}) == {
        "path": ["été"], "nodes": ["a", "b"]}
    with pytest.raises(BadRequest) as caught:
        query_arguments({"root": [b"logs"], "glob": [b"\xff"]})
    assert (caught.value.parameter, caught.value.message) == ("glob", "glob: not valid UTF-8")


def test_only_slashes_are_stripped_from_a_path() -> None:
    assert one(path="X").path == "X"
    assert one(path="/Xa/bX/").path == "Xa/bX"


def test_since_without_a_zone_is_utc_whatever_the_local_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert one(since="2023-11-14T22:13:20").since == 1_700_000_000.0
    finally:
        monkeypatch.undo()
        time.tzset()
