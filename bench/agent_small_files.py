"""Small files: requests per second and agent CPU per request, agent vs nginx, one run.

What the coordinator does most: many small files, one after another, on a kept-alive
connection. Every round sends ``--requests`` (1500) GETs of a ``--size`` (4 KiB) file to each
server in turn (order rotated per round); each answer must be 200 with exactly ``--size``
bytes. Reported: median requests/s (wall clock, one client) and median server CPU
microseconds per request (``/proc/PID/stat`` via psutil). ``--agent-from NAME=DIR`` adds the
agent of another source tree (``git archive COMMIT | tar -x -C DIR``), to compare commits.

    .venv/bin/python bench/agent_small_files.py --rounds 7 --agent-from before=/tmp/before

Exit codes: 0 done; 2 usage / missing tool; 3 a request failed (the figures mean nothing).
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    DATA_DIR,
    Server,
    agent_server,
    machine_notes,
    median,
    nginx_binary,
    nginx_server,
    parse_size,
    parse_sources,
    print_json_line,
    print_table,
    running,
    work_dir,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds per server [5]")
    p.add_argument("--requests", type=int, default=1500, help="GETs per round [1500]")
    p.add_argument("--size", default="4KiB", help="file size [4KiB]")
    p.add_argument("--agent-from", action="append", default=[], metavar="NAME=DIR",
                   help="also measure the agent of another source tree (repeatable)")
    return p.parse_args(argv)


def small_file(size: int) -> Path:
    folder = DATA_DIR / "small"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"small-{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        path.write_bytes(os.urandom(size))
        path.chmod(0o644)
    return path


def one_round(server: Server, requests: int, size: int) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) for *requests* GETs on one connection."""
    host, port = server.base_url.removeprefix("http://").split(":")
    path = server.file_url.removeprefix(server.base_url)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        cpu, began = server.cpu_seconds(), time.monotonic()
        for _ in range(requests):
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or len(body) != size:
                raise RuntimeError(f"{server.name}: {response.status}, {len(body)} bytes")
        elapsed, cpu = time.monotonic() - began, server.cpu_seconds() - cpu
    finally:
        conn.close()
    return requests / elapsed, cpu / requests * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nginx_binary()
    size = parse_size(args.size)
    path = small_file(size)
    sources = parse_sources(args.agent_from)
    figures: dict[str, dict[str, list[float]]] = {}
    with work_dir("fleetzip-small-") as tmp:
        servers = [agent_server(tmp, path.parent, path.name, max_bandwidth=0),
                   nginx_server(tmp, path.parent, path.name, workers="1")]
        servers += [agent_server(tmp, path.parent, path.name, name=name, source=source,
                                 max_bandwidth=0) for name, source in sources.items()]
        try:
            with running(servers):
                for server in servers:  # warm-up
                    one_round(server, 50, size)
                for n in range(args.rounds):
                    order = servers[n % len(servers):] + servers[:n % len(servers)]
                    for server in order:
                        rate, cpu = one_round(server, args.requests, size)
                        entry = figures.setdefault(server.name, {"rate": [], "cpu": []})
                        entry["rate"].append(rate)
                        entry["cpu"].append(cpu)
                    print(f"round {n + 1}/{args.rounds}: " + ", ".join(
                        f"{s.name} {figures[s.name]['rate'][-1]:.0f}/s" for s in order),
                        flush=True)
        except RuntimeError as exc:
            print(f"a request failed, measurement invalid: {exc}", file=sys.stderr)
            return 3
    report(figures, args, size)
    return 0


def report(figures: dict[str, dict[str, list[float]]], args: argparse.Namespace,
           size: int) -> None:
    agent_rate = median(figures["agent"]["rate"])
    rows: list[list[Any]] = []
    for name, entry in figures.items():
        paired = median([a / b for a, b in zip(figures["agent"]["rate"], entry["rate"],
                                                strict=True)])
        rows.append([name, f"{median(entry['rate']):.0f}", f"{min(entry['rate']):.0f}",
                     f"{max(entry['rate']):.0f}", f"{median(entry['cpu']):.0f}",
                     f"{agent_rate / median(entry['rate']):.2f}", f"{paired:.2f}"])
    print()
    print_table(["server", "median req/s", "min", "max", "CPU µs/req",
                 "agent/this (medians)", "agent/this (per round)"], rows)
    print_json_line({
        "bench": "agent_small_files", "size": size, "rounds": args.rounds,
        "requests": args.requests, "agent_from": args.agent_from,
        "servers": {name: {k: [round(v, 1) for v in vals] for k, vals in entry.items()}
                    for name, entry in figures.items()},
        "machine": machine_notes(),
    })


if __name__ == "__main__":
    sys.exit(main())
