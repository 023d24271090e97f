"""Coordinator memory under a slow client: peak RSS while a client reading at about 5 MB/s
downloads the merged zip of N agents x 1 GiB (stored), for a bounded time.

    .venv/bin/python bench/coordinator_rss.py [--agents 4] [--size 1GiB] [--rate 5MB]
                                              [--duration 60]

The agents can send far faster than the client reads, so without end-to-end flow control
the coordinator would buffer the difference (about N x 1 GiB). Target: peak RSS <= 128 MiB.
The RSS of the idle coordinator (after a /api/plan) is printed as the reference.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    RssSampler,
    ensure_file,
    human_bytes,
    machine_notes,
    parse_size,
    running,
    warm_page_cache,
    work_dir,
)
from coordinator_zip import agents, coordinator

TARGET = 128 * MIB


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--rate", default="5MB", help="client read rate per second")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def slow_client(url: str, rate: int, duration: float) -> tuple[int, int | None]:
    """Read *url* at about *rate* bytes/s for *duration* s; (bytes read, Content-Length)."""
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    header, _, body = head.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in header.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    got = len(body)
    piece = max(rate // 20, 4096)
    started = time.monotonic()
    while time.monotonic() - started < duration:
        data = sock.recv(piece)
        if not data:
            break
        got += len(data)
        ahead = got / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    sock.close()
    return got, length


def window_peaks(samples: Sequence[tuple[float, int]], width: float) -> list[int]:
    """The highest RSS sampled in each *width*-second window, in order."""
    peaks: dict[int, int] = {}
    for t, rss in samples:
        peaks[int(t // width)] = max(peaks.get(int(t // width), 0), rss)
    return [peaks[k] for k in sorted(peaks)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size, rate = parse_size(args.size), parse_size(args.rate)
    source = ensure_file(f"bench-{size}.bin", size)
    warm_page_cache(source)
    with work_dir("fleetzip-bench-rss-", args.keep) as tmp:
        nodes = agents(tmp, source, args.agents)
        coord = coordinator(tmp, nodes)
        with running([*nodes, coord]):
            with urllib.request.urlopen(coord.base_url + "/api/plan?root=data") as plan:
                plan.read()  # warm the planner: the idle RSS includes it
            time.sleep(0.5)
            idle = RssSampler(coord.pid).rss()
            with RssSampler(coord.pid, interval=0.1) as sampler:
                got, length = slow_client(coord.file_url, rate, args.duration)
            time.sleep(0.5)
            after = RssSampler(coord.pid).rss()
    peak = sampler.peak
    print(f"archive {human_bytes(length or 0)}; client read {human_bytes(got)} in "
          f"{args.duration:.0f}s ({got / args.duration / 1e6:.1f} MB/s)")
    print(f"coordinator RSS: idle {human_bytes(idle)}, peak {human_bytes(peak)} "
          f"(at {sampler.peak_at:.1f}s), after {human_bytes(after)}; target <= "
          f"{human_bytes(TARGET)}")
    print("peak RSS per 10 s window (flat = bounded, rising = a leak): " + ", ".join(
        f"{human_bytes(rss)}" for rss in window_peaks(sampler.samples, 10.0)))
    print(json.dumps({"bench": "coordinator_rss", "agents": args.agents, "size": size,
                      "rate": rate, "read": got, "rss_idle": idle, "rss_peak": peak,
                      "rss_after": after, "machine": machine_notes()}))
    return 0 if peak <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
