"""The floor under any merged-zip server on this machine, for bench/coordinator_zip.py.

Fetches the N source files one after the other and forwards their bytes to the client,
computing SHA-256 and CRC-32 of every byte (what `_fleetzip/SHA256SUMS` and the zip's
entries need) — and nothing else: no zip framing, no status files, no HTTP framework, no
flow-control bookkeeping, no error handling worth the name. A coordinator cannot be
faster than this; if this cannot reach a target on this machine, no coordinator can.

It is built to be as fast as Python allows: three threads per download — a reader fills
1 MiB buffers from the agent sockets (``recv_into``), a hasher runs SHA-256 and CRC-32
over them, a writer ``sendall``\\ s them to the client — all of which release the GIL, so
hashing overlaps the socket copies on another core. Eight buffers circulate (8 MiB).

    python bench/relay_floor.py --listen 127.0.0.1:9001 \\
        --source http://127.0.0.2:8701/files/data/f.bin --source ...

``GET /download`` answers 200 with ``Content-Length`` = the sum of the sources' sizes and
their bytes, concatenated; ``GET /livez`` answers 200. Sources are plain ``http://`` URLs.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import queue
import socket
import socketserver
import threading
import urllib.parse
import zlib
from collections.abc import Sequence

BUFFER = 1024 * 1024
BUFFERS = 8
HEAD_LIMIT = 64 * 1024


def source_size(url: str) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("HEAD", parts.path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HEAD {url}: HTTP {response.status}")
        return int(response.headers["Content-Length"])
    finally:
        conn.close()


def open_body(url: str) -> tuple[socket.socket, bytes, int]:
    """GET *url* on a raw socket: (socket, body bytes read with the head, Content-Length)."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 f"Connection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        more = sock.recv(HEAD_LIMIT)
        if not more or len(head) > HEAD_LIMIT:
            raise RuntimeError(f"GET {url}: no response head")
        head += more
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if lines[0].split()[1] != "200":
        raise RuntimeError(f"GET {url}: {lines[0]}")
    length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith("content-length:"))
    return sock, rest, length


def reader(urls: Sequence[str], free: queue.Queue[bytearray],
           out: queue.Queue[tuple[bytearray, int] | None]) -> None:
    for url in urls:
        sock, rest, left = open_body(url)
        with sock:
            if rest:
                buf = free.get()
                buf[:len(rest)] = rest
                out.put((buf, len(rest)))
                left -= len(rest)
            while left > 0:
                buf = free.get()
                n = sock.recv_into(buf, min(left, BUFFER))
                if n == 0:
                    raise RuntimeError(f"GET {url}: closed with {left} bytes to go")
                left -= n
                out.put((buf, n))
    out.put(None)


def hasher(inbox: queue.Queue[tuple[bytearray, int] | None],
           out: queue.Queue[tuple[bytearray, int] | None]) -> None:
    sha, crc = hashlib.sha256(), 0
    while (item := inbox.get()) is not None:
        view = memoryview(item[0])[:item[1]]
        sha.update(view)
        crc = zlib.crc32(view, crc)
        out.put(item)
    out.put(None)


class Handler(socketserver.BaseRequestHandler):
    urls: Sequence[str] = ()

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            more = self.request.recv(HEAD_LIMIT)
            if not more:
                return
            head += more
        path = head.split(b" ", 2)[1]
        if path == b"/livez":
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                 b"Connection: close\r\n\r\nok")
            return
        total = sum(source_size(url) for url in self.urls)
        self.request.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n"
                             f"Content-Type: application/octet-stream\r\n"
                             f"Connection: close\r\n\r\n".encode())
        self.relay()

    def relay(self) -> None:
        free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(BUFFERS):
            free.put(bytearray(BUFFER))
        to_hash: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        to_send: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        threads = [threading.Thread(target=reader, args=(self.urls, free, to_hash), daemon=True),
                   threading.Thread(target=hasher, args=(to_hash, to_send), daemon=True)]
        for thread in threads:
            thread.start()
        while (item := to_send.get()) is not None:
            self.request.sendall(memoryview(item[0])[:item[1]])
            free.put(item[0])
        for thread in threads:
            thread.join()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:9001")
    parser.add_argument("--source", action="append", default=[], help="an http:// URL")
    args = parser.parse_args(argv)
    Handler.urls = tuple(args.source)
    host, port = args.listen.rsplit(":", 1)
    with Server((host, int(port)), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
