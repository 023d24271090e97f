"""Downloads over a real agent process: bytes, headers, Range and conditional requests."""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.agent.conftest import Tree, raw_get
from tests.support import ServerProcess

CHUNK = 64 * 1024  # the agents of these tests use chunk_size 64KiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 123], ids=lambda s: f"{s}B"
)
def test_download_is_byte_exact(shared_agent: ServerProcess, shared_tree: Tree, size: int) -> None:
    data = os.urandom(size)
    shared_tree.write(f"sized/{size}.bin", data)
    status, headers, body = raw_get(shared_agent.url, f"/files/logs/sized/{size}.bin")
    assert status == 200
    assert sha(body) == sha(data)
    assert headers["Content-Length"] == str(size)
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Disposition"] == f'attachment; filename="{size}.bin"'
    assert headers["ETag"].startswith('"') and not headers["ETag"].startswith("W/")
    mtime = os.stat(shared_tree.root / f"sized/{size}.bin").st_mtime
    assert headers["Last-Modified"] == email.utils.formatdate(mtime, usegmt=True)


def test_head_has_headers_and_no_body(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    shared_tree.write("head.txt", b"x" * 1000)
    status, headers, body = raw_get(shared_agent.url, "/files/logs/head.txt", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "1000"
    assert headers["Content-Type"].startswith("text/plain")


def test_non_ascii_name_gets_rfc6266_filename(
    shared_agent: ServerProcess, shared_tree: Tree
) -> None:
    shared_tree.write("räksmörgås €.log", b"utf8 name\n")
    path = "/files/logs/r%C3%A4ksm%C3%B6rg%C3%A5s%20%E2%82%AC.log"
    status, headers, body = raw_get(shared_agent.url, path)
    assert (status, body) == (200, b"utf8 name\n")
    disposition = headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A4ksm%C3%B6rg%C3%A5s%20%E2%82%AC.log" in disposition
    assert disposition.startswith('attachment; filename="r_ksm_rg_s _.log"')


@pytest.mark.parametrize(
    "path",
    ["/files/logs/sub", "/files/logs/missing.log", "/files/nosuchroot/app.log", "/files/logs/sub/"],
)
def test_not_a_regular_file_is_404_json(shared_agent: ServerProcess, path: str) -> None:
    status, headers, body = raw_get(shared_agent.url, path)
    assert status in (400, 404)
    assert headers["Content-Type"].startswith("application/json")
    # a root the agent does not have is its own code (common/errors.py UnknownRoot)
    expected = "unknown_root" if "nosuchroot" in path else "not_found"
    assert json.loads(body)["error"]["code"] in (expected, "bad_request")


# -- Range ----------------------------------------------------------------------------

RANGE_DATA = bytes(range(256)) * 1000  # 256000 bytes, every offset distinguishable


@pytest.fixture(scope="module")
def range_file(shared_tree: Tree) -> str:
    shared_tree.write("range.bin", RANGE_DATA)
    return "/files/logs/range.bin"


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),  # first byte
        ("bytes=255999-255999", 255999, 256000),  # last byte
        ("bytes=-10", 255990, 256000),  # suffix
        ("bytes=-999999", 0, 256000),  # suffix longer than the file
        ("bytes=1000-", 1000, 256000),  # open
        ("bytes=100-70000", 100, 70001),  # across chunks
        ("bytes=250000-999999", 250000, 256000),  # end past EOF is capped
    ],
)
def test_single_range_is_206(
    shared_agent: ServerProcess, range_file: str, header: str, start: int, stop: int
) -> None:
    status, headers, body = raw_get(shared_agent.url, range_file, {"Range": header})
    assert status == 206
    assert body == RANGE_DATA[start:stop]
    assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/256000"
    assert headers["Content-Length"] == str(stop - start)


@pytest.mark.parametrize("header", ["bytes=256000-", "bytes=300000-300010", "bytes=-0"])
def test_unsatisfiable_range_is_416(
    shared_agent: ServerProcess, range_file: str, header: str
) -> None:
    status, headers, body = raw_get(shared_agent.url, range_file, {"Range": header})
    assert status == 416
    assert headers["Content-Range"] == "bytes */256000"
    assert json.loads(body)["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",  # several ranges: answered with the whole file (documented)
        "bytes=abc",
        "bytes=5-1",
        "items=0-10",
        "bytes=",
        "bytes=--5",
        "0-10",
    ],
)
def test_multi_or_malformed_range_is_ignored(
    shared_agent: ServerProcess, range_file: str, header: str
) -> None:
    status, headers, body = raw_get(shared_agent.url, range_file, {"Range": header})
    assert status == 200
    assert body == RANGE_DATA
    assert "Content-Range" not in headers


def test_head_ignores_range(shared_agent: ServerProcess, range_file: str) -> None:
    status, headers, _ = raw_get(shared_agent.url, range_file, {"Range": "bytes=0-9"}, "HEAD")
    assert status == 200 and headers["Content-Length"] == "256000"


def validators(agent: ServerProcess, path: str) -> tuple[str, str]:
    _, headers, _ = raw_get(agent.url, path, method="HEAD")
    return headers["ETag"], headers["Last-Modified"]


def later_date(http_date: str, seconds: int) -> str:
    moment = email.utils.parsedate_to_datetime(http_date).timestamp() + seconds
    return email.utils.formatdate(moment, usegmt=True)


def test_if_range(shared_agent: ServerProcess, range_file: str) -> None:
    etag, modified = validators(shared_agent, range_file)
    cases = [
        (etag, 206),  # same version: the range
        ('"other"', 200),  # changed: the whole file
        (f"W/{etag}", 200),  # weak tags never match If-Range
        (modified, 206),  # the exact Last-Modified date
        ("Mon, 01 Jan 2001 00:00:00 GMT", 200),
        # a date later than Last-Modified is no match either: only an exact date is a
        # strong validator (RFC 9110 §13.1.5), so a "not older than" test would be wrong
        (later_date(modified, 1), 200),
        (later_date(modified, 86_400), 200),
    ]
    for if_range, expected in cases:
        headers = {"Range": "bytes=10-19", "If-Range": if_range}
        status, _, body = raw_get(shared_agent.url, range_file, headers)
        assert status == expected, if_range
        assert body == (RANGE_DATA[10:20] if expected == 206 else RANGE_DATA)


def test_conditional_get(shared_agent: ServerProcess, range_file: str) -> None:
    etag, modified = validators(shared_agent, range_file)
    url = shared_agent.url
    for headers, expected in [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f'"nope", {etag}'}, 304),
        ({"If-None-Match": f"W/{etag}"}, 304),  # weak comparison
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"nope"'}, 200),
        ({"If-Modified-Since": modified}, 304),
        ({"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        # If-None-Match wins over If-Modified-Since (RFC 9110 §13.1.3)
        ({"If-None-Match": '"nope"', "If-Modified-Since": modified}, 200),
        ({"If-Match": '"nope"'}, 412),
        ({"If-Match": etag}, 200),
        ({"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, 412),
    ]:
        status, answer, body = raw_get(url, range_file, headers)
        assert status == expected, headers
        if status == 304:
            assert body == b"" and answer["ETag"] == etag
        if status == 200:
            assert body == RANGE_DATA


def test_etag_changes_with_content(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    path = shared_tree.write("changing.txt", b"one")
    first, _ = validators(shared_agent, "/files/logs/changing.txt")
    path.write_bytes(b"two!")
    second, _ = validators(shared_agent, "/files/logs/changing.txt")
    assert first != second
    status, _, _ = raw_get(shared_agent.url, "/files/logs/changing.txt", {"If-None-Match": first})
    assert status == 200


def test_etag_changes_on_a_same_size_rewrite_within_one_second(
    shared_agent: ServerProcess, shared_tree: Tree
) -> None:
    """Same inode, same size, same whole second: only the nanoseconds tell the versions apart."""
    path = shared_tree.write("rewritten.txt", b"version-1")
    second = int(os.stat(path).st_mtime)
    os.utime(path, ns=(second * 10**9, second * 10**9 + 100_000_000))
    first, first_modified = validators(shared_agent, "/files/logs/rewritten.txt")
    with path.open("r+b") as f:  # rewritten in place: the inode stays
        f.write(b"version-2")
    os.utime(path, ns=(second * 10**9, second * 10**9 + 600_000_000))
    again, again_modified = validators(shared_agent, "/files/logs/rewritten.txt")
    assert first_modified == again_modified  # Last-Modified cannot tell them apart
    assert first != again
    status, _, body = raw_get(shared_agent.url, "/files/logs/rewritten.txt",
                              {"If-None-Match": first})
    assert (status, body) == (200, b"version-2")
    status, _, body = raw_get(shared_agent.url, "/files/logs/rewritten.txt",
                              {"Range": "bytes=8-8", "If-Range": first})
    assert (status, body) == (200, b"version-2")  # the old tag must not get a range of the new


def test_file_through_symlink_inside_root(shared_agent: ServerProcess) -> None:
    status, _, body = raw_get(shared_agent.url, "/files/logs/inside-link")
    assert (status, body) == (200, b"b\n")


def test_second_root(shared_agent: ServerProcess) -> None:
    assert raw_get(shared_agent.url, "/files/other/o.txt")[2] == b"other root\n"


def test_growing_file_is_sent_up_to_its_size_at_start(
    shared_agent: ServerProcess, shared_tree: Tree
) -> None:
    import http.client

    size = 16 * 1024 * 1024  # more than the socket buffers hold: the agent must wait for us
    path: Path = shared_tree.root / "growing.log"
    with path.open("wb") as f:
        f.truncate(size)  # sparse: zeros
    host, port = shared_agent.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/files/logs/growing.log")
    response = conn.getresponse()
    assert response.getheader("Content-Length") == str(size)
    with path.open("ab") as f:
        f.write(b"G" * 1_000_000)  # appended after the response started
    body = response.read()
    conn.close()
    assert len(body) == size
    assert body.count(0) == size  # only the original bytes, none of the appended ones


def test_shrinking_file_ends_early_and_is_logged(
    shared_agent: ServerProcess, shared_tree: Tree
) -> None:
    import http.client

    size = 32 * 1024 * 1024
    path = shared_tree.root / "shrinking.log"
    with path.open("wb") as f:
        f.truncate(size)
    host, port = shared_agent.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/files/logs/shrinking.log")
    response = conn.getresponse()
    assert response.getheader("Content-Length") == str(size)
    os.truncate(path, 1024 * 1024)  # log rotation truncated the file
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    conn.close()
    assert len(info.value.partial) < size
    assert "shrinking.log shrank while being sent" in shared_agent.output()
    assert "Traceback" not in shared_agent.output()
