"""The names that cross a trust boundary: each refusal at its exact edge, with its reason."""

from __future__ import annotations

import pytest

from common.names import check_node_name, check_relative_path


@pytest.mark.parametrize("name", ["a", "A", "0", "a" * 63, "a.b_c-d", "Z9"])
def test_node_name_edges_accepted(name: str) -> None:
    assert check_node_name(name) == name


@pytest.mark.parametrize("name", ["a" * 64, "_a", "a!", "a\n", "a ", " a", None, 7])
def test_node_name_edges_refused_with_the_rule(name: object) -> None:
    with pytest.raises(ValueError) as caught:
        check_node_name(name)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"invalid node name {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit")


@pytest.mark.parametrize(("path", "reason"), [
    ("", "empty path"),
    ("a\x1fb", "control character in path"),  # the last control character below space
    ("a\x00", "control character in path"),
    ("a\x7fb", "control character in path"),  # DEL
    ("a\\b", "backslash in path"),
    ("/a", "absolute path"),
    ("a//b", "path segment '' not allowed"),
    ("a/", "path segment '' not allowed"),
    ("./a", "path segment '.' not allowed"),
    ("a/..", "path segment '..' not allowed"),
])
def test_relative_path_refusals_say_why(path: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_relative_path(path)
    assert str(caught.value) == reason


@pytest.mark.parametrize("path", ["a b", "~", "a\x80b", "...", "a/.b/c..", "-"])
def test_relative_path_edges_accepted(path: str) -> None:
    """Space (32) and characters from 128 up are not control characters; ``...`` is a name."""
    assert check_relative_path(path) == path
