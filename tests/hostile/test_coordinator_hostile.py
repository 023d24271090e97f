"""Hostile input against a real coordinator (in front of two real agents).

Selection parameters, proxied file paths, registration bodies, Basic credentials,
tokens and raw request bytes: every answer is a clear 4xx (JSON error) or a legal answer,
never a 5xx, never a byte from outside an agent's root, never a filesystem path.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import REGISTER_TOKEN, Target
from tests.hostile.rawhttp import RawAnswer, assert_clear_error, raw_request
from tests.hostile.test_agent_hostile import TRICKS

REGISTER_AUTH = (b"Authorization", b"Bearer " + REGISTER_TOKEN.encode())
FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SELECTION_KEYS = ["root", "path", "glob", "since", "nodes", "labels", "compression", "name"]
VALUES = st.text(max_size=24) | st.sampled_from(
    ["logs", "a1", "a2", "a1,a2", "group=real", "stored", "deflate", "**", "**/*.log", "2h",
     "..", "../secret", "/etc", "updir", "escape.log", "abs/secret", "a\r\nX-Evil: 1",
     "x\x00y", "ü" * 30, "=", ",,", "a=b=c", "1e400", "-5m", *TRICKS])


def call(target: Target, path: bytes, *, headers: list[tuple[bytes, bytes]] | None = None,
         method: bytes = b"GET", body: bytes = b"", auth: bool = True) -> RawAnswer:
    answer = raw_request(target.host, target.port, path, method=method, body=body,
                         headers=(target.auth if auth else []) + (headers or []), timeout=30)
    target.assert_nothing_leaked(answer)
    return answer


def assert_sane(answer: RawAnswer, ok: tuple[int, ...] = (200,)) -> None:
    assert answer.status is not None, "no answer"
    assert answer.status < 500, f"server error {answer.status}: {answer.raw[:400]!r}"
    if answer.status not in ok:
        assert_clear_error(answer)


@FUZZ
@given(query=st.dictionaries(st.sampled_from(SELECTION_KEYS), VALUES, max_size=6))
def test_plan_selection_parameters(coordinator_target: Target, query: dict[str, str]) -> None:
    answer = call(coordinator_target, b"/api/plan?" + urllib.parse.urlencode(query).encode())
    assert_sane(answer)
    if answer.status == 400:
        message = answer.json()["error"]["message"]
        assert any(key in message for key in SELECTION_KEYS), message


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=st.dictionaries(st.sampled_from(SELECTION_KEYS), VALUES, max_size=5))
def test_download_selection_parameters(coordinator_target: Target, query: dict[str, str]) -> None:
    query.setdefault("root", "logs")
    answer = call(coordinator_target, b"/api/download?" + urllib.parse.urlencode(query).encode())
    assert_sane(answer)
    if answer.status == 200:
        archive = zipfile.ZipFile(io.BytesIO(answer.body))
        assert archive.testzip() is None
        for name in archive.namelist():
            assert not name.startswith("/") and ".." not in name.split("/"), name
        disposition = answer.headers.get("content-disposition", "")
        assert "\r" not in disposition and "\n" not in disposition


@pytest.mark.parametrize("name", ["a\r\nX-Evil: 1", "ü.zip", "x\x00.zip", 'q"uote.zip',
                                  "a/b.zip", "a\\b.zip", "x" * 500, "%0d%0aSet-Cookie: a=b"])
def test_archive_name_cannot_inject_headers(coordinator_target: Target, name: str) -> None:
    query = urllib.parse.urlencode({"root": "logs", "path": "app.log", "name": name})
    answer = call(coordinator_target, b"/api/download?" + query.encode())
    assert_sane(answer)
    assert "x-evil" not in answer.headers and "set-cookie" not in answer.headers


@FUZZ
@given(parts=st.lists(st.sampled_from(TRICKS) | st.text(min_size=1, max_size=10), min_size=1,
                      max_size=6),
       node=st.sampled_from(["a1", "a2", "nope", "..", "%2e%2e", "a1%2f..", "\u00e9"]))
def test_proxied_file_paths(coordinator_target: Target, parts: list[str], node: str) -> None:
    raw = urllib.parse.quote("/".join(parts), safe="/%")
    target = f"/api/nodes/{urllib.parse.quote(node, safe='%')}/files/logs/{raw}"
    answer = call(coordinator_target, target.encode("ascii"))
    assert_sane(answer, ok=(200, 206, 304))


@FUZZ
@given(raw=st.binary(min_size=1, max_size=30))
def test_raw_bytes_in_the_request_target(coordinator_target: Target, raw: bytes) -> None:
    raw = raw.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"") or b"x"
    for prefix in (b"/api/nodes/a1/files/logs/", b"/api/plan?root=", b"/api/agents/",
                   b"/api/download?root=logs&path="):
        answer = call(coordinator_target, prefix + raw)
        assert_sane(answer, ok=(200, 206))


@FUZZ
@given(value=st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
       wrap=st.sampled_from(["basic", "basic-colon", "bearer", "raw"]))
def test_bogus_credentials(coordinator_target: Target, value: bytes, wrap: str) -> None:
    header = {
        "basic": b"Basic " + base64.b64encode(value),
        "basic-colon": b"Basic " + base64.b64encode(b"alice:" + value),
        "bearer": b"Bearer " + value,
        "raw": value,
    }[wrap]
    answer = call(coordinator_target, b"/api/agents", auth=False,
                  headers=[(b"Authorization", header)])
    assert_clear_error(answer)
    if answer.status == 400:  # the HTTP layer refuses control bytes in a header value
        assert any(b < 32 or b == 127 for b in header)
        return
    assert_refused(answer)
    if answer.status == 401:
        assert answer.headers.get("www-authenticate"), answer.headers


def assert_refused(answer: RawAnswer) -> None:
    """401, or 429 once this address sent too many wrong passwords (the failure limit)."""
    assert answer.status in (401, 429), answer.raw[:300]
    if answer.status == 429:
        assert int(answer.headers["retry-after"]) >= 1, answer.headers


@pytest.mark.parametrize("header", [
    b"Basic", b"Basic ", b"Basic ====", b"Basic " + base64.b64encode(b"alice"),
    b"Basic " + base64.b64encode(b"alice:wrong"), b"Basic " + base64.b64encode(b":"),
    b"Basic " + base64.b64encode(b"\xff\xfe:\xff"), b"Basic " + b"A" * 60000,
    b"Basic " + base64.b64encode(b"alice:" + b"x" * 40000), b"Bearer", b"Bearer  ",
    b"bearer " + b"t" * 50000, b"Digest username=alice",
])
def test_malformed_authorization(coordinator_target: Target, header: bytes) -> None:
    answer = call(coordinator_target, b"/api/plan?root=logs", auth=False,
                  headers=[(b"Authorization", header)])
    assert_clear_error(answer)
    assert_refused(answer)


def test_correct_basic_user_passes(coordinator_target: Target) -> None:
    """From an address of its own: the guesses above may have used up this one's."""
    good = b"Basic " + base64.b64encode(b"alice:correct horse")
    answer = raw_request(coordinator_target.host, coordinator_target.port, b"/api/agents",
                         headers=[(b"Authorization", good)], source="127.251.0.1")
    assert answer.status == 200, answer.raw[:300]


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"null", b'"x"', b"{}", b'{"name": "../x", "url": "http://127.0.0.9:1"}',
    b'{"name": "ok", "url": "file:///etc/passwd"}', b'{"name": "ok", "url": 5}',
    b'{"name": "' + b"a" * 100 + b'", "url": "http://127.0.0.9:1"}',
    b'{"name": "ok", "url": "http://127.0.0.9:1", "labels": [1]}',
    pytest.param(b'{"name": "ok", "url": "http://127.0.0.9:1", "labels": {"k": 5}}',
                 id="label-value-not-a-string"),
    b'{"name": "a\\u0000b", "url": "http://127.0.0.9:1"}', b"\xff\xfe\x00",
    pytest.param(b'{"name": "ok", "url": "http://127.0.0.9:1", "version": {"x": 1}}',
                 id="version-not-a-string"),
    # regression: json.loads raised RecursionError, answered 500
    pytest.param(b'{"name": ' * 5000, id="deeply-nested-json"),
])
def test_hostile_registrations(coordinator_target: Target, body: bytes) -> None:
    before = {a["name"] for a in call(coordinator_target, b"/api/agents").json()["agents"]}
    answer = call(coordinator_target, b"/api/agents/register", method=b"POST", body=body,
                  auth=False, headers=[(b"Content-Type", b"application/json"), REGISTER_AUTH])
    after = {a["name"] for a in call(coordinator_target, b"/api/agents").json()["agents"]}
    for name in after - before:  # clean up what got in, so other cases stay independent
        call(coordinator_target, b"/api/agents/" + name.encode(), method=b"DELETE",
             auth=False, headers=[REGISTER_AUTH])
    assert_clear_error(answer)
    assert answer.status == 400, answer.raw[:300]
    assert after == before, after - before


def test_registration_without_a_name_is_refused(coordinator_target: Target) -> None:
    """Found by schemathesis: a body without "name" registered an agent called "None"."""
    test_hostile_registrations(coordinator_target, b'{"url": "http://127.0.0.9:1"}')
    test_hostile_registrations(coordinator_target, b'{"name": null, "url": "http://127.0.0.9:1"}')


def test_registration_url_with_control_characters_is_refused(coordinator_target: Target) -> None:
    test_hostile_registrations(coordinator_target, b'{"name": "ok", "url": "http://a\\u0000b:1"}')
    test_hostile_registrations(coordinator_target, b'{"name": "ok", "url": "http://a b/"}')


@pytest.mark.parametrize("name", [b"..", b"%2e%2e", b"a%00b", b"x" * 300, b"\xff", b"a1%2f..%2f"])
def test_hostile_deregistrations(coordinator_target: Target, name: bytes) -> None:
    answer = call(coordinator_target, b"/api/agents/" + name, method=b"DELETE")
    assert_clear_error(answer)
    agents = call(coordinator_target, b"/api/agents").json()["agents"]
    assert {"a1", "a2"} <= {a["name"] for a in agents}


@pytest.mark.parametrize("size", [70 * 1024, 1024 * 1024])
def test_headers_too_large(coordinator_target: Target, size: int) -> None:
    answer = call(coordinator_target, b"/api/plan?root=logs", headers=[(b"X-Big", b"a" * size)])
    if answer.status is not None:
        assert_clear_error(answer)
    assert call(coordinator_target, b"/livez", auth=False).status == 200


def test_huge_query_string(coordinator_target: Target) -> None:
    nodes = ",".join(["a1"] * 6000)
    answer = call(coordinator_target, b"/api/plan?root=logs&nodes=" + nodes.encode())
    assert_sane(answer)


def test_plan_reveals_no_escaped_files(coordinator_target: Target) -> None:
    answer = call(coordinator_target, b"/api/plan?root=logs&glob=**")
    assert answer.status == 200, answer.raw[:300]
    plan = answer.json()
    entries = [f["path"] for node in plan["nodes"] for f in node["files"]]
    assert "app.log" in entries
    assert not any(p.startswith(("updir/", "abs/")) or p in ("escape.log", "sibling.log")
                   for p in entries), entries
    json.dumps(plan)  # a plain JSON document
