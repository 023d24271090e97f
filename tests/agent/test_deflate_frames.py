"""``GET /files/...?compress=deflate``: raw-deflate frames, decoded here as a coordinator would.

Frames are ``>III`` (L, R, running CRC) + L bytes of raw deflate; the concatenation of the
deflate parts plus ``b"\\x03\\x00"`` (an empty final block) must inflate to exactly the range.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import struct
import zlib

import pytest

from tests.agent.conftest import Tree, raw_get
from tests.agent.test_checksum import checksum, digested, wait_for
from tests.support import ServerProcess

CHUNK = 64 * 1024  # the test agents' chunk_size: at most this much source per frame
FRAME = struct.Struct(">III")
CLOSE = b"\x03\x00"  # an empty final static block: what the coordinator appends


def log_text(lines: int) -> bytes:
    return b"".join(
        b'10.%d.%d.%d - - [02/Dec/2026:10:%02d:%02d +0000] "GET /api/v1/items/%d HTTP/1.1" %d %d\n'
        % (i % 251, i % 13, i % 7, i // 60 % 60, i % 60, i * 7919 % 100000,
           (200, 404, 304, 500)[i % 4], i * 31 % 9000)
        for i in range(lines)
    )


LOG = log_text(6000)  # ~480 KB: several frames


def parse_frames(body: bytes) -> list[tuple[bytes, int, int]]:
    """(deflate bytes, source length, running CRC) per frame; the body must end on a frame."""
    frames, at = [], 0
    while at < len(body):
        length, source, crc = FRAME.unpack_from(body, at)
        at += FRAME.size
        assert at + length <= len(body), "a cut frame"
        frames.append((body[at:at + length], source, crc))
        at += length
    return frames


def inflate(deflate: bytes) -> tuple[bytes, bool]:
    """The bytes a raw deflate stream gives, and whether it held a final block."""
    inflater = zlib.decompressobj(-15)
    return inflater.decompress(deflate) + inflater.flush(), inflater.eof


def frames_of(agent: ServerProcess, rel: str, start: int, end: int, query: str = "",
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    status, head, body = raw_get(agent.url, f"/files/logs/{rel}?compress=deflate{query}",
                                 {"Range": f"bytes={start}-{end - 1}", **(headers or {})})
    return status, head, body


@pytest.fixture(scope="module")
def log_file(shared_tree: Tree) -> str:
    shared_tree.write("frames/app.log", LOG)
    return "frames/app.log"


@pytest.mark.parametrize("span", [(0, len(LOG)), (12345, len(LOG) - 999), (5, 6),
                                  (CHUNK - 1, CHUNK + 1)], ids=lambda s: f"{s[0]}-{s[1]}")
def test_frames_inflate_to_the_range(shared_agent: ServerProcess, log_file: str,
                                     span: tuple[int, int]) -> None:
    start, end = span
    status, headers, body = frames_of(shared_agent, log_file, start, end)
    assert status == 200
    assert headers["Content-Type"] == "application/x-fleetzip-deflate-frames"
    assert headers["X-Fleetzip-Compression"] == "deflate"
    assert headers["X-Fleetzip-Source-Span"] == f"{start}-{end}/{len(LOG)}"
    assert "Content-Length" not in headers and headers["Transfer-Encoding"] == "chunked"
    frames = parse_frames(body)
    assert sum(source for _, source, _ in frames) == end - start
    done = start
    for deflate, source, crc in frames:
        assert 0 < source <= CHUNK  # frame size follows chunk_size: the memory bound
        assert deflate.endswith(b"\x00\x00\xff\xff")  # a Z_SYNC_FLUSH boundary
        done += source
        assert crc == zlib.crc32(LOG[start:done])  # the running CRC through this frame
    stream = b"".join(deflate for deflate, _, _ in frames)
    data, final = inflate(stream)
    assert (data, final) == (LOG[start:end], False)  # no final block from the agent
    assert inflate(stream + CLOSE) == (LOG[start:end], True)
    assert len(stream) < (end - start) // 3 or end - start < 100  # it did compress


def test_a_resume_continues_the_stream(shared_agent: ServerProcess, log_file: str) -> None:
    start, end = 100, len(LOG) - 100
    first = parse_frames(frames_of(shared_agent, log_file, start, end)[2])
    assert len(first) >= 4
    kept = first[:2]  # the coordinator got two frames, then the agent went away
    resume_at = start + sum(source for _, source, _ in kept)
    crc = kept[-1][2]
    status, headers, body = frames_of(shared_agent, log_file, resume_at, end, f"&crc={crc}")
    assert status == 200
    assert headers["X-Fleetzip-Source-Span"] == f"{resume_at}-{end}/{len(LOG)}"
    rest = parse_frames(body)
    done = resume_at
    for _, source, running in rest:
        done += source
        assert running == zlib.crc32(LOG[start:done])  # continued from crc=
    assert rest[-1][2] == zlib.crc32(LOG[start:end])
    stream = b"".join(deflate for deflate, _, _ in kept + rest) + CLOSE
    assert inflate(stream) == (LOG[start:end], True)


def test_the_compressing_pass_caches_the_sha256(shared_agent: ServerProcess,
                                                shared_tree: Tree) -> None:
    shared_tree.write("frames/cached.log", LOG)
    start, end = 10, len(LOG) - 10
    before_deflate = digested(shared_agent, "deflate")
    frames = parse_frames(frames_of(shared_agent, "frames/cached.log", start, end)[2])
    assert frames[-1][2] == zlib.crc32(LOG[start:end])
    wait_for(lambda: digested(shared_agent, "deflate") == before_deflate + end - start)
    before = digested(shared_agent, "checksum")
    status, _, answer = checksum(shared_agent, "frames/cached.log",
                                 f"start={start}&end={end}&sha256=1")
    assert status == 200
    assert answer["sha256"] == hashlib.sha256(LOG[start:end]).hexdigest()
    assert answer["crc32"] == zlib.crc32(LOG[start:end])
    assert digested(shared_agent, "checksum") == before  # answered from the cache


def test_no_range_means_the_whole_file(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    shared_tree.write("frames/whole.log", LOG[:5000])
    status, headers, body = raw_get(shared_agent.url, "/files/logs/frames/whole.log"
                                    "?compress=deflate")
    assert status == 200
    assert headers["X-Fleetzip-Source-Span"] == "0-5000/5000"
    stream = b"".join(d for d, _, _ in parse_frames(body)) + CLOSE
    assert inflate(stream) == (LOG[:5000], True)


def test_an_empty_file_has_no_frames(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    shared_tree.write("frames/empty.log", b"")
    status, headers, body = raw_get(shared_agent.url, "/files/logs/frames/empty.log"
                                    "?compress=deflate")
    assert (status, body, headers["X-Fleetzip-Source-Span"]) == (200, b"", "0-0/0")
    assert inflate(CLOSE) == (b"", True)


def test_a_replaced_file_shows_in_the_span(shared_agent: ServerProcess, log_file: str) -> None:
    """If-Range that no longer holds: the whole file, as the span header says."""
    status, headers, body = frames_of(shared_agent, log_file, 100, 200,
                                      headers={"If-Range": '"not-the-etag"'})
    assert status == 200
    assert headers["X-Fleetzip-Source-Span"] == f"0-{len(LOG)}/{len(LOG)}"
    status, _, body = frames_of(shared_agent, log_file, 100, 200,
                                headers={"If-Match": '"not-the-etag"'})
    assert (status, json.loads(body)["error"]["code"]) == (412, "precondition_failed")


def test_head_has_the_frame_headers(shared_agent: ServerProcess, log_file: str) -> None:
    status, headers, body = raw_get(shared_agent.url, f"/files/logs/{log_file}?compress=deflate",
                                    method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["X-Fleetzip-Compression"] == "deflate"


@pytest.mark.parametrize(("query", "parameter"), [
    ("compress=gzip", "compress"),
    ("compress=", "compress"),
    ("compress=DEFLATE", "compress"),
    ("compress=deflate&compress=deflate", "compress"),
    ("compress=" + "x" * 5000, "compress"),
    ("compress=deflate&crc=4294967296", "crc"),
    ("compress=deflate&crc=" + "1" * 5000, "crc"),
    ("compress=deflate&crc=-1", "crc"),
    ("compress=deflate&crc=0x1", "crc"),
    ("crc=5", "crc"),
])
def test_bad_compress_parameters_are_400(shared_agent: ServerProcess, log_file: str,
                                         query: str, parameter: str) -> None:
    status, _headers, body = raw_get(shared_agent.url, f"/files/logs/{log_file}?{query}")
    assert status == 400, body[:200]
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    assert parameter in error["message"]
    assert len(body) < 400  # the hostile value is not echoed whole


def test_range_beyond_the_file_is_416(shared_agent: ServerProcess, log_file: str) -> None:
    status, _, body = frames_of(shared_agent, log_file, len(LOG) + 5, len(LOG) + 10)
    assert (status, json.loads(body)["error"]["code"]) == (416, "range_not_satisfiable")


def test_a_file_that_shrinks_cuts_the_body_after_whole_frames(
    shared_agent: ServerProcess, shared_tree: Tree
) -> None:
    """The frames so far stay valid; the body ends without its last chunk, visibly cut."""
    size = 16 * 1024 * 1024
    data = os.urandom(size)  # incompressible: frames are as big as their source, so the
    path = shared_tree.write("frames/shrinking.log", data)  # agent waits on the client
    host, port = shared_agent.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/files/logs/frames/shrinking.log?compress=deflate",
                 headers={"Range": f"bytes=0-{size - 1}"})
    response = conn.getresponse()
    assert response.status == 200
    os.truncate(path, 1024 * 1024)  # log rotation truncated the file
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    conn.close()
    body = info.value.partial
    frames, at = [], 0
    while at + FRAME.size <= len(body):
        length, source, crc = FRAME.unpack_from(body, at)
        if at + FRAME.size + length > len(body):
            break
        frames.append((body[at + FRAME.size:at + FRAME.size + length], source, crc))
        at += FRAME.size + length
    done = sum(source for _, source, _ in frames)
    assert 0 < done < size
    assert frames[-1][2] == zlib.crc32(data[:done])
    assert inflate(b"".join(d for d, _, _ in frames) + CLOSE) == (data[:done], True)
    assert "frames/shrinking.log shrank while being sent" in shared_agent.output()
    assert "Traceback" not in shared_agent.output()
