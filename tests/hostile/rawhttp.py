"""A raw-socket HTTP/1.1 client that sends exactly the bytes it is given.

`http.client` and `urllib` refuse (rightly) to send control characters, invalid UTF-8 or
oversized headers; a hostile client does not ask. `raw_request` writes the request target
and headers as raw bytes, reads the answer until the server closes, and parses it just
enough to check status, headers and body.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawAnswer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(host: str, port: int, target: bytes, *, method: bytes = b"GET",
                headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"",
                timeout: float = 10.0, source: str | None = None) -> RawAnswer:
    """Send the request (from the loopback address *source*, when given) and read the
    answer until the server closes."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host.encode(),
             b"Connection: close"]
    for name, value in headers or []:
        lines.append(name + b": " + value)
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection((host, port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as sock:
        # The server may refuse before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        chunks = []
        try:
            while piece := sock.recv(65536):
                chunks.append(piece)
        except ConnectionResetError:
            pass
    return parse(b"".join(chunks))


def parse(raw: bytes) -> RawAnswer:
    if not raw:
        return RawAnswer(None, {}, b"", raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return RawAnswer(status, headers, body, raw)


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


def assert_clear_error(answer: RawAnswer, *, allowed: tuple[int, ...] = ()) -> None:
    """A 4xx with a JSON ``{"error": {"code", "message"}}`` body (or one of *allowed*)."""
    assert answer.status is not None, "the server closed the connection without an answer"
    if answer.status in allowed:
        return
    assert 400 <= answer.status < 500, f"expected a 4xx, got {answer.status}: {answer.raw[:500]!r}"
    if answer.status == 431 or not answer.body:
        return  # the HTTP layer refused before any handler ran (e.g. oversized headers)
    error = answer.json()["error"]
    assert error["code"] and error["message"], answer.body
