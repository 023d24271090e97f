from __future__ import annotations

import logging
from pathlib import Path

import pytest

from common.auth import TokenStore, bearer_token, read_tokens, token_matches
from common.names import check_node_name, check_relative_path


def test_bearer_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_token_file_rotation_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\nold-token\n\nnew-token\n")
    store = TokenStore.open(str(path))
    assert store.check("Bearer old-token") and store.check("Bearer new-token")
    assert not store.check("Bearer old-toke") and not store.check(None)
    path.write_text("newer\n")
    assert store.reload()
    assert store.check("Bearer newer") and not store.check("Bearer old-token")
    path.write_text("# nothing left\n")
    assert not store.reload()  # an empty file keeps the previous tokens
    assert store.check("Bearer newer")


def test_no_token_file_means_open() -> None:
    store = TokenStore.open(None)
    assert not store.enabled and store.check(None)


def test_token_matches_checks_all() -> None:
    assert token_matches("b", ("a", "b", "c"))
    assert not token_matches("d", ("a", "b", "c"))
    assert not token_matches("", ("a",))


@pytest.mark.parametrize("name", ["node1", "a", "web-01.prod_x", "9" * 63])
def test_good_node_names(name: str) -> None:
    assert check_node_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "a/b", "ä", "9" * 64, "a\n"])
def test_bad_node_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid node name"):
        check_node_name(name)


@pytest.mark.parametrize("path", ["a", "a/b.log", "x/.hidden", "a..b", "ü/日本.log"])
def test_good_relative_paths(path: str) -> None:
    assert check_relative_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "a\\b", "a\x00b",
             "a\nb", ".."],
)
def test_bad_relative_paths(path: str) -> None:
    with pytest.raises(ValueError):
        check_relative_path(path)


def test_token_file_format_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("  spaced  \n#hidden\n \t\nlast")
    assert read_tokens(path) == ("spaced", "last")
    path.write_text("\n# only a comment\n   \n")
    with pytest.raises(ValueError) as caught:
        read_tokens(path)
    assert str(caught.value) == f"no token in {path}"
    with pytest.raises(OSError):
        TokenStore.open(str(tmp_path / "missing"))


def test_reload_logs_and_keeps_tokens_when_the_file_is_gone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text("one\ntwo\n")
    store = TokenStore.open(str(path))
    assert store.enabled and store.tokens == ("one", "two")
    caplog.set_level(logging.INFO, logger="common.auth")
    assert store.reload()
    assert caplog.messages == [f"reloaded 2 token(s) from {path}"]
    caplog.clear()
    path.unlink()
    assert not store.reload()
    assert caplog.messages == [  # the reason is in the log line
        "token reload failed, keeping the previous tokens: "
        f"[Errno 2] No such file or directory: '{path}'"]
    assert caplog.records[0].levelno == logging.ERROR
    assert store.check("Bearer two")
    assert TokenStore.open(None).reload()  # nothing to reload when auth is off


def test_authorization_header_edges() -> None:
    store = TokenStore(path="x", tokens=("tok",))
    assert store.check("BEARER tok") and store.check("Bearer tok ")
    for header in (None, "", "tok", "Bearer", "Bearer  ", "Bearertok", "Token tok", "Bearer tok2"):
        assert not store.check(header), header
    assert bearer_token("Bearer a b") == "a b"  # the rest of the line is the token
    assert not token_matches("tok", ())
