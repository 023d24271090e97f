"""Hostile input against the agent's checksum route and ``?compress=deflate`` downloads.

Same rules as test_agent_hostile: a legal answer or a clear 4xx JSON error, never a 5xx, never
a byte from outside the root, never a filesystem path; a 400 names the parameter.
"""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import Target
from tests.hostile.rawhttp import assert_clear_error
from tests.hostile.test_agent_hostile import TRICKS, assert_sane, get

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

NUMBERS = st.sampled_from(["", "0", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "00", "٣",
                           "9" * 19, "9" * 20, "9" * 5000, "18446744073709551616",
                           "4294967295", "4294967296", "nan", "%00", "600", "599"]) \
    | st.integers(min_value=0, max_value=10**25).map(str) | st.text(max_size=12)


@FUZZ
@given(parts=st.lists(st.sampled_from(TRICKS) | st.text(min_size=1, max_size=12), min_size=1,
                      max_size=8))
def test_checksum_paths_never_escape(agent_target: Target, parts: list[str]) -> None:
    raw = "/".join(parts)
    for target in (urllib.parse.quote(raw, safe="/%"), urllib.parse.quote(raw, safe="")):
        answer = get(agent_target, b"/checksum/logs/" + target.encode("ascii") + b"?sha256=1")
        assert_sane(answer, ok=(200,))


@FUZZ
@given(start=NUMBERS, end=NUMBERS, sha=st.sampled_from(["", "1", "0", "true", "x", "1&sha256=1"]))
def test_checksum_parameters(agent_target: Target, start: str, end: str, sha: str) -> None:
    query = urllib.parse.urlencode({"start": start, "end": end, "sha256": sha})
    answer = get(agent_target, b"/checksum/logs/app.log?" + query.encode())
    assert_sane(answer, ok=(200,))
    if answer.status == 400:
        message = answer.json()["error"]["message"]
        assert any(name in message for name in ("start", "end", "sha256")), message
    elif answer.status == 200:
        body = answer.json()
        assert 0 <= body["start"] <= body["end"] <= body["size"] == 600


@FUZZ
@given(compress=st.sampled_from(["deflate", "gzip", "", "DEFLATE", "deflate ", "br"])
       | st.text(max_size=20), crc=NUMBERS,
       range_=st.sampled_from(["", "bytes=0-99", "bytes=599-", "bytes=600-700", "bytes=-5",
                               "bytes=5-1", "bytes=0-0,5-9", "bytes=99999999999999999999-"]))
def test_compress_parameters(agent_target: Target, compress: str, crc: str, range_: str) -> None:
    query = urllib.parse.urlencode({"compress": compress, "crc": crc})
    headers = [(b"Range", range_.encode())] if range_ else []
    answer = get(agent_target, b"/files/logs/app.log?" + query.encode(), headers=headers)
    assert_sane(answer, ok=(200,))
    if answer.status == 400:
        message = answer.json()["error"]["message"]
        assert "compress" in message or "crc" in message, message
    elif answer.status == 200:
        assert answer.headers["x-fleetzip-compression"] == "deflate"


@pytest.mark.parametrize("target", [
    b"/checksum/logs/escape.log", b"/checksum/logs/updir/MARKER.txt",
    b"/checksum/logs/sibling.log", b"/checksum/logs/abs/secret/MARKER.txt",
    b"/checksum/logs/..%2f..%2fsecret", b"/checksum/logs/%2fetc%2fpasswd",
    b"/checksum/logs/" + b"a" * 5000, b"/files/logs/escape.log?compress=deflate",
    b"/files/logs/updir/MARKER.txt?compress=deflate",
])
def test_known_escapes_are_refused(agent_target: Target, target: bytes) -> None:
    answer = get(agent_target, target)
    assert_clear_error(answer)
    assert answer.status in (400, 404), answer.status


@pytest.mark.parametrize("route", [b"/checksum/logs/app.log", b"/checksum/logs/app.log?sha256=1",
                                   b"/files/logs/app.log?compress=deflate"])
def test_the_token_is_needed(agent_target: Target, route: bytes) -> None:
    answer = get(agent_target, route, auth=False)
    assert answer.status == 401
    assert_clear_error(answer)
