"""Hostile input against a real agent process: paths, queries, headers, tokens.

Every answer must be a clear 4xx with a JSON error (or a normal answer for a legal
request), never a 5xx, never a byte from outside the root, never a filesystem path.
Example counts are bounded so the whole module runs in seconds.
"""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import Target
from tests.hostile.rawhttp import assert_clear_error, raw_request

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Pieces an attacker strings together to climb out of a root.
TRICKS = ["..", ".", "%2e%2e", "%2E%2E", "%2f", "%5c", "\\", "%00", "/", "//", "updir",
          "escape.log", "sibling.log", "abs", "secret", "MARKER.txt", "..%2f", "%252e%252e",
          "logs-secret", "x.log", "sub", "a.log", "app.log", "~", "%c0%ae", "\u2024\u2024",
          "%ff", "\ufeff", "...", "./", "?", "#", ";", "%3f"]


def get(target: Target, path: bytes, headers: list[tuple[bytes, bytes]] | None = None,
        method: bytes = b"GET", auth: bool = True):
    answer = raw_request(target.host, target.port, path, method=method,
                         headers=(target.auth if auth else []) + (headers or []))
    target.assert_nothing_leaked(answer)
    return answer


def assert_sane(answer, ok: tuple[int, ...] = (200, 206, 304)) -> None:
    """A legal answer, or a clear 4xx; never a 5xx or silence."""
    assert answer.status is not None, "no answer"
    assert answer.status < 500, f"server error {answer.status}: {answer.raw[:400]!r}"
    if answer.status not in ok:
        assert_clear_error(answer)


@FUZZ
@given(parts=st.lists(st.sampled_from(TRICKS) | st.text(min_size=1, max_size=12), min_size=1,
                      max_size=8))
def test_file_paths_never_escape(agent_target: Target, parts: list[str]) -> None:
    raw = "/".join(parts)
    for target in (urllib.parse.quote(raw, safe="/%"), urllib.parse.quote(raw, safe="")):
        answer = get(agent_target, b"/files/logs/" + target.encode("ascii"))
        assert_sane(answer)


@FUZZ
@given(raw=st.binary(min_size=1, max_size=40))
def test_raw_bytes_in_the_request_target(agent_target: Target, raw: bytes) -> None:
    """Invalid UTF-8, control bytes, anything but CR/LF/space (they end the request line)."""
    raw = raw.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"") or b"x"
    for prefix in (b"/files/logs/", b"/list/logs/", b"/files/", b"/list/"):
        answer = get(agent_target, prefix + raw)
        assert_sane(answer)


@pytest.mark.parametrize("target", [
    b"/files/logs/\xff\xfe.log", b"/files/logs/%ff%fe.log", b"/list/logs/%c3%28",
    b"/files/\xc3\x28/app.log", b"/files/logs/app.log%00", b"/files/logs/%00",
    b"/files/logs/sub%2f..%2f..%2fsecret%2fMARKER.txt", b"/files/logs/..%2f..%2fsecret",
    b"/files/logs/updir/MARKER.txt", b"/files/logs/escape.log", b"/files/logs/sibling.log",
    b"/files/logs/abs/secret/MARKER.txt", b"/files/logs/..\\secret\\MARKER.txt",
    b"/files/logs//etc/passwd", b"/files/logs/%2fetc%2fpasswd", b"/list/logs/updir",
    b"/list/logs/abs", b"/list/logs/..", b"/files/..%2f/secret/MARKER.txt",
    b"/files/logs/" + b"a" * 5000, b"/files/logs/" + b"a/" * 3000,
])
def test_known_escapes_are_refused(agent_target: Target, target: bytes) -> None:
    answer = get(agent_target, target)
    assert_clear_error(answer)
    assert answer.status in (400, 404, 414), answer.status


def test_symlinked_dirs_are_not_listed_outside(agent_target: Target) -> None:
    answer = get(agent_target, b"/list/logs?recursive=true")
    assert answer.status == 200, answer.raw[:300]
    paths = {e["path"] for e in answer.json()["entries"]}
    assert "app.log" in paths and "sub/a.log" in paths
    assert not any(p.startswith(("updir/", "abs/")) for p in paths), paths
    assert "escape.log" not in paths and "sibling.log" not in paths, paths


@FUZZ
@given(glob=st.text(max_size=30) | st.sampled_from(["**", "**/*", "../*", "/etc/*", "[", "[!",
                                                    "a[b-", "*" * 200, "\x00", "**/../**"]),
       since=st.text(max_size=20) | st.sampled_from(["-1", "1e309", "nan", "inf", "2h", "-2h",
                                                     "9999999999999999999", "0x10", "P1D"]),
       recursive=st.text(max_size=6))
def test_list_query_parameters(agent_target: Target, glob: str, since: str,
                               recursive: str) -> None:
    query = urllib.parse.urlencode({"glob": glob, "since": since, "recursive": recursive})
    answer = get(agent_target, b"/list/logs?" + query.encode())
    assert_sane(answer, ok=(200,))
    if answer.status == 400:
        message = answer.json()["error"]["message"]
        assert any(p in message for p in ("glob", "since", "recursive")), message


@FUZZ
@given(value=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255),
                     max_size=60) | st.sampled_from(["bytes=", "bytes=-0", "bytes=5-1",
                                                     "bytes=0-0,0-0", "bytes=99999999999999999-",
                                                     "bytes=--1", "items=0-1", "bytes=0-1;x",
                                                     "bytes=-99999999999999999999999"]),
       header=st.sampled_from(["Range", "If-Range", "If-None-Match", "If-Modified-Since",
                               "If-Match", "If-Unmodified-Since"]))
def test_conditional_and_range_headers(agent_target: Target, value: str, header: str) -> None:
    answer = get(agent_target, b"/files/logs/app.log",
                 headers=[(header.encode(), value.encode("latin-1"))])
    assert_sane(answer, ok=(200, 206, 304, 412, 416))
    if answer.status == 200:
        assert answer.body == b"hello\n" * 100


def test_huge_range_list(agent_target: Target) -> None:
    ranges = ",".join(f"{i}-{i}" for i in range(0, 5000))  # ~44 KB: under the header limit
    header = (b"Range", b"bytes=" + ranges.encode())
    answer = get(agent_target, b"/files/logs/app.log", headers=[header])
    assert_sane(answer, ok=(200, 206, 416))
    assert len(answer.body) <= 600  # never a multipart blow-up of the file


@pytest.mark.parametrize("size", [70 * 1024, 1024 * 1024])
def test_headers_too_large(agent_target: Target, size: int) -> None:
    """Oversized headers: refused (a 4xx, or the connection closed) and the agent lives on."""
    answer = get(agent_target, b"/files/logs/app.log", headers=[(b"X-Big", b"a" * size)])
    if answer.status is not None:
        assert_clear_error(answer)
    again = get(agent_target, b"/livez", auth=False)
    assert again.status == 200


def test_many_headers(agent_target: Target) -> None:
    headers = [(f"X-H{i}".encode(), b"v") for i in range(3000)]
    answer = get(agent_target, b"/files/logs/app.log", headers=headers)
    if answer.status is not None and answer.status != 200:
        assert_clear_error(answer)


@FUZZ
@given(value=st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
def test_bogus_tokens(agent_target: Target, value: bytes) -> None:
    for header in (value, b"Bearer " + value, b"Basic " + base64.b64encode(value)):
        answer = get(agent_target, b"/files/logs/app.log", headers=[(b"Authorization", header)],
                     auth=False)
        if header == b"Bearer " + agent_target.token.encode():
            continue
        assert_clear_error(answer)
        if answer.status == 400:  # the HTTP layer refuses control bytes in a header value
            assert any(b < 32 or b == 127 for b in header), answer.raw[:300]
            continue
        assert answer.status == 401, answer.raw[:300]
        assert answer.headers.get("www-authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("route", [b"/files/logs/app.log", b"/list/logs", b"/info", b"/metrics"])
def test_protected_routes_need_the_token(agent_target: Target, route: bytes) -> None:
    answer = get(agent_target, route, auth=False)
    assert answer.status == 401
    assert_clear_error(answer)
    wrong = get(agent_target, route, auth=False,
                headers=[(b"Authorization", b"Bearer " + agent_target.token.encode()[:-1])])
    assert wrong.status == 401


@pytest.mark.parametrize("route", [b"/health", b"/healthz", b"/readyz", b"/livez"])
def test_open_routes_reveal_no_paths(agent_target: Target, route: bytes) -> None:
    answer = get(agent_target, route, auth=False)
    assert answer.status in (200, 503)


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE",
                                    b"PROPFIND", b"G\xffT"])
def test_other_methods(agent_target: Target, method: bytes) -> None:
    answer = get(agent_target, b"/files/logs/app.log", method=method)
    assert answer.status is None or answer.status >= 400
    if answer.status is not None:
        assert_clear_error(answer)
