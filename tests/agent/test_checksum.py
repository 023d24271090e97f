"""``GET /checksum/{root}/{path}`` and the send pass, over a real agent process.

Values are checked against ``zlib.crc32`` / ``hashlib``; that a cached answer read nothing is
seen in the agent's own counter of digested bytes (``/metrics``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import SECRET, AgentFactory, Tree, raw_get
from tests.support import ServerProcess

CHUNK = 64 * 1024  # the test agents' chunk_size
DATA = os.urandom(5 * CHUNK + 4321)
DIGESTED = "fleetzip_agent_digested_bytes_total"
LOOKUPS = "fleetzip_agent_checksum_cache_lookups_total"


def metric(agent: ServerProcess, name: str, labels: str) -> float:
    status, _, body = raw_get(agent.url, "/metrics")
    assert status == 200
    prefix = f"{name}{{{labels}}} "
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    raise AssertionError(f"{prefix!r} not in /metrics")


def digested(agent: ServerProcess, source: str) -> int:
    return int(metric(agent, DIGESTED, f'source="{source}"'))


def checksum(agent: ServerProcess, rel: str, query: str = "",
             headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    status, head, body = raw_get(agent.url, f"/checksum/logs/{rel}?{query}", headers)
    return status, head, json.loads(body)


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """The agent stores a download's digests just after its last byte went out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.mark.parametrize("span", [(0, len(DATA)), (0, 0), (7, 7), (1, len(DATA) - 1),
                                  (CHUNK, 3 * CHUNK), (len(DATA) - 1, len(DATA))],
                         ids=lambda s: f"{s[0]}-{s[1]}")
def test_values_are_those_of_the_range(shared_agent: ServerProcess, shared_tree: Tree,
                                       span: tuple[int, int]) -> None:
    path = shared_tree.write("sum/data.bin", DATA)
    start, end = span
    status, headers, body = checksum(shared_agent, "sum/data.bin",
                                     f"start={start}&end={end}&sha256=1")
    assert status == 200, body
    info = os.stat(path)
    _, file_headers, _ = raw_get(shared_agent.url, "/files/logs/sum/data.bin", method="HEAD")
    assert body == {
        "path": "sum/data.bin", "start": start, "end": end, "size": len(DATA),
        "etag": file_headers["ETag"], "mtime": info.st_mtime,
        "crc32": zlib.crc32(DATA[start:end]),
        "sha256": hashlib.sha256(DATA[start:end]).hexdigest(),
    }
    assert headers["ETag"] == file_headers["ETag"]


def test_crc_only_and_defaults(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    shared_tree.write("sum/defaults.bin", DATA)
    status, _, body = checksum(shared_agent, "sum/defaults.bin")
    assert status == 200
    assert (body["start"], body["end"], body["sha256"]) == (0, len(DATA), None)
    assert body["crc32"] == zlib.crc32(DATA)


def test_a_cache_hit_reads_nothing(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    shared_tree.write("sum/cached.bin", DATA)
    query = f"start=100&end={len(DATA)}"
    before, hits = digested(shared_agent, "checksum"), metric(shared_agent, LOOKUPS,
                                                               'result="hit"')
    first = checksum(shared_agent, "sum/cached.bin", query)[2]
    assert digested(shared_agent, "checksum") == before + len(DATA) - 100  # one pass
    again = checksum(shared_agent, "sum/cached.bin", query)[2]
    assert again == first
    assert digested(shared_agent, "checksum") == before + len(DATA) - 100  # no second pass
    assert metric(shared_agent, LOOKUPS, 'result="hit"') == hits + 1
    # a SHA-256 the cache lacks costs one pass, then it is cached too
    with_sha = checksum(shared_agent, "sum/cached.bin", query + "&sha256=1")[2]
    assert with_sha["sha256"] == hashlib.sha256(DATA[100:]).hexdigest()
    after_sha = digested(shared_agent, "checksum")
    assert after_sha == before + 2 * (len(DATA) - 100)
    assert checksum(shared_agent, "sum/cached.bin", query + "&sha256=1")[2] == with_sha
    assert checksum(shared_agent, "sum/cached.bin", query)[2] == with_sha  # crc-only: hit too
    assert digested(shared_agent, "checksum") == after_sha


def test_a_changed_file_is_not_answered_from_the_cache(shared_agent: ServerProcess,
                                                       shared_tree: Tree) -> None:
    path = shared_tree.write("sum/changes.bin", DATA)
    old = checksum(shared_agent, "sum/changes.bin", "sha256=1")[2]
    new_data = DATA[::-1]
    path.write_bytes(new_data)
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))  # a later mtime
    new = checksum(shared_agent, "sum/changes.bin", "sha256=1")[2]
    assert new["crc32"] == zlib.crc32(new_data) != old["crc32"]
    assert new["etag"] != old["etag"]


def test_end_beyond_the_size_is_416(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    path = shared_tree.write("sum/shrinks.bin", DATA)
    assert checksum(shared_agent, "sum/shrinks.bin", f"end={len(DATA)}")[0] == 200
    os.truncate(path, len(DATA) - 10)  # the file shrank under the plan
    status, headers, body = checksum(shared_agent, "sum/shrinks.bin", f"end={len(DATA)}")
    assert status == 416
    assert body["error"]["code"] == "range_not_satisfiable"
    assert headers["Content-Type"].startswith("application/json")
    status, _, body = checksum(shared_agent, "sum/shrinks.bin", f"start={len(DATA)}")
    assert (status, body["error"]["code"]) == (416, "range_not_satisfiable")


def test_if_match(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    path = shared_tree.write("sum/match.bin", DATA)
    etag = checksum(shared_agent, "sum/match.bin")[2]["etag"]
    assert checksum(shared_agent, "sum/match.bin", headers={"If-Match": etag})[0] == 200
    assert checksum(shared_agent, "sum/match.bin", headers={"If-Match": f'"x", {etag}'})[0] == 200
    path.write_bytes(DATA + b"more")  # rewritten: another size, another ETag
    status, _, body = checksum(shared_agent, "sum/match.bin", headers={"If-Match": etag})
    assert (status, body["error"]["code"]) == (412, "precondition_failed")
    weak = checksum(shared_agent, "sum/match.bin", headers={"If-Match": "W/" + etag})
    assert weak[0] == 412  # a weak tag never matches strongly (RFC 9110 §13.1.1)


@pytest.mark.parametrize(("query", "parameter"), [
    ("start=" + "9" * 5000, "start"),
    ("end=" + "1" * 20, "end"),
    ("start=-1", "start"),
    ("end=1e3", "end"),
    ("start=%201", "start"),
    ("start=0x10", "start"),
    ("start=%D9%A1", "start"),  # an Arabic-Indic digit one: int() would take it
    ("start=1&start=2", "start"),
    ("end=9223372036854775808", "end"),
    ("start=5&end=4", "end"),
    ("sha256=maybe", "sha256"),
    ("end=", "end"),
])
def test_bad_parameters_are_400_naming_them(shared_agent: ServerProcess, shared_tree: Tree,
                                            query: str, parameter: str) -> None:
    shared_tree.write("sum/params.bin", DATA)
    started = time.monotonic()
    status, _headers, body = checksum(shared_agent, "sum/params.bin", query)
    assert time.monotonic() - started < 2
    assert status == 400, body
    assert body["error"]["code"] == "bad_request"
    assert parameter in body["error"]["message"]


@pytest.mark.parametrize("target", [
    "/checksum/logs/escape-file", "/checksum/logs/escape-dir/secret.txt",
    "/checksum/logs/escape-relative", "/checksum/logs/etc-link/passwd",
    "/checksum/logs/../secret.txt", "/checksum/logs/%2e%2e/secret.txt",
    "/checksum/logs/sub/..%2f..%2fsecret.txt", "/checksum/logs/sub", "/checksum/nosuch/app.log",
    "/checksum/logs/", "/checksum/logs/%00",
])
def test_paths_outside_the_root_are_refused(shared_agent: ServerProcess, target: str) -> None:
    status, _headers, body = raw_get(shared_agent.url, target + "?sha256=1")
    assert status in (400, 404), (status, body)
    assert SECRET not in body
    assert json.loads(body)["error"]["code"] in ("bad_request", "not_found", "unknown_root")


def test_symlink_inside_the_root_is_summed(shared_agent: ServerProcess) -> None:
    status, _, body = raw_get(shared_agent.url, "/checksum/logs/inside-link")
    assert status == 200
    assert json.loads(body)["crc32"] == zlib.crc32(b"b\n")


def test_token_is_required(agent_factory: AgentFactory, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("checksum-token-" + "k" * 24 + "\n")
    agent = agent_factory(token_file=str(token_file))
    status, headers, body = raw_get(agent.url, "/checksum/logs/app.log")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(body)["error"]["code"] == "unauthorized"
    auth = {"Authorization": "Bearer checksum-token-" + "k" * 24}
    status, _, body = raw_get(agent.url, "/checksum/logs/app.log", auth)
    assert status == 200
    assert json.loads(body)["crc32"] == zlib.crc32(b"hello from logs\n")


def test_info_lists_the_features(shared_agent: ServerProcess) -> None:
    status, _, body = raw_get(shared_agent.url, "/info")
    assert status == 200
    assert json.loads(body)["features"] == ["checksum", "deflate"]


# -- the send pass ----------------------------------------------------------------------


def test_a_range_download_leaves_its_digests(shared_agent: ServerProcess,
                                             shared_tree: Tree) -> None:
    shared_tree.write("sum/sent.bin", DATA)
    start, end = 1000, len(DATA) - 7
    sent_before = digested(shared_agent, "send")
    status, _, body = raw_get(shared_agent.url, "/files/logs/sum/sent.bin",
                              {"Range": f"bytes={start}-{end - 1}"})
    assert (status, body) == (206, DATA[start:end])
    wait_for(lambda: digested(shared_agent, "send") == sent_before + end - start)
    before = digested(shared_agent, "checksum")
    status, _, answer = checksum(shared_agent, "sum/sent.bin", f"start={start}&end={end}&sha256=1")
    assert status == 200
    assert answer["crc32"] == zlib.crc32(DATA[start:end])
    assert answer["sha256"] == hashlib.sha256(DATA[start:end]).hexdigest()
    assert digested(shared_agent, "checksum") == before  # from the cache: no pass of its own


def test_a_plain_download_is_not_hashed(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    shared_tree.write("sum/plain.bin", DATA)
    sent_before = digested(shared_agent, "send")
    assert raw_get(shared_agent.url, "/files/logs/sum/plain.bin")[2] == DATA
    before = digested(shared_agent, "checksum")
    checksum(shared_agent, "sum/plain.bin", "sha256=1")
    assert digested(shared_agent, "send") == sent_before
    assert digested(shared_agent, "checksum") == before + len(DATA)


def test_an_unfinished_download_stores_nothing(shared_agent: ServerProcess,
                                               shared_tree: Tree) -> None:
    """The client reads the head and leaves: the bytes it never got have no digests."""
    big = os.urandom(64 * CHUNK)
    shared_tree.write("sum/left.bin", big)
    host, port = shared_agent.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /files/logs/sum/left.bin HTTP/1.1\r\nHost: x\r\n"
                     b"Range: bytes=0-" + str(len(big) - 1).encode() + b"\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 206")
    wait_for(lambda: json.loads(raw_get(shared_agent.url, "/info")[2])["active_downloads"] == 0)
    before = digested(shared_agent, "checksum")
    _status, _, answer = checksum(shared_agent, "sum/left.bin", "sha256=1")
    assert answer["sha256"] == hashlib.sha256(big).hexdigest()
    assert digested(shared_agent, "checksum") == before + len(big)  # a pass: nothing cached


def test_bytes_rewritten_in_place_replace_the_cached_crc(shared_agent: ServerProcess,
                                                         shared_tree: Tree) -> None:
    """Same size, same mtime, other bytes: the send pass reports what it really sent."""
    path = shared_tree.write("sum/inplace.bin", DATA)
    promised = checksum(shared_agent, "sum/inplace.bin")[2]
    info = os.stat(path)
    rewritten = DATA[:100] + bytes(b ^ 0xFF for b in DATA[100:200]) + DATA[200:]
    path.write_bytes(rewritten)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # the same key as before
    assert checksum(shared_agent, "sum/inplace.bin")[2]["crc32"] == promised["crc32"]  # stale
    sent_before = digested(shared_agent, "send")
    status, _, body = raw_get(shared_agent.url, "/files/logs/sum/inplace.bin",
                              {"Range": f"bytes=0-{len(DATA) - 1}"})
    assert (status, body) == (206, rewritten)
    wait_for(lambda: digested(shared_agent, "send") == sent_before + len(DATA))
    before = digested(shared_agent, "checksum")
    after = checksum(shared_agent, "sum/inplace.bin", "sha256=1")[2]
    assert digested(shared_agent, "checksum") == before  # the send pass's values, cached
    assert after["crc32"] == zlib.crc32(rewritten) != promised["crc32"]
    assert after["sha256"] == hashlib.sha256(rewritten).hexdigest()
