"""Peak RSS of the agent while many slow clients download big files.

``--clients`` (32) raw-socket clients each ask the agent for the same ``--size`` (1 GiB) file
and read it at ``--rate`` (~1 MB/s) for ``--duration`` seconds (they need not finish). Each
client socket gets a small ``SO_RCVBUF`` (``--rcvbuf``, 16 KiB, set before connect so the TCP
window stays small): the kernel cannot soak up the file for the client, so the agent feels
the backpressure and must wait on ``flush()`` instead of buffering. The agent's RSS is sampled
every 0.2 s with psutil; the table gives baseline (right after start), peak and the figure
after the clients left. Target (issue 2): peak ≤ 64 MiB.

The same load is run against Tornado's StaticFileHandler (bench/static_server.py) as a
reference measured in the same run (``--no-reference`` skips it).

    .venv/bin/python bench/agent_rss.py --clients 32 --duration 45 --size 1GiB

Exit codes: 0 done; 1 target missed (only with ``--strict``); 2 usage; 3 the load did not
happen as asked (a client was refused or got nothing), so the figure would mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import (
    MIB,
    RssSampler,
    Server,
    agent_server,
    ensure_file,
    machine_notes,
    median,
    parse_env,
    parse_size,
    print_json_line,
    print_table,
    running,
    static_server,
    work_dir,
)

TARGET_PEAK = 64 * MIB
READ_SIZE = 64 * 1024  # one recv per 64 KiB: ~16 wake-ups/s per client at 1 MB/s
STALL_SECONDS = 15.0  # a client gives up this long after --duration if the server stalls
SETTLE_SECONDS = 2.0  # keep sampling after the clients leave, to see the memory come back


@dataclass
class ClientResult:
    status: int = 0
    content_length: int = -1
    received: int = 0
    seconds: float = 0.0
    error: str = ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32, help="slow clients at once [32]")
    p.add_argument("--rate", default="1MB", help="bytes/s each client reads [1MB]")
    p.add_argument("--rcvbuf", default="16KiB", help="client SO_RCVBUF [16KiB]")
    p.add_argument("--size", default="1GiB", help="file size [1GiB]")
    p.add_argument("--duration", type=float, default=45.0,
                   help="seconds the clients read before hanging up [45]")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the agent measurement; the worst peak counts [1]")
    p.add_argument("--chunk-size", default=None,
                   help="agent chunk_size (default: the agent's own default, 1MiB)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the StaticFileHandler reference run")
    p.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the agent only (repeatable), e.g. "
                        "MALLOC_ARENA_MAX=1")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- slow clients


def small_window_socket(rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect(): the window scale is agreed in the handshake, so this caps the window.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    return sock


async def read_head(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                    result: ClientResult) -> int:
    """Read the response head; fill status and length; return the body bytes already read."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ConnectionError(f"closed after {len(buf)} header bytes")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    result.status = int(lines[0].split()[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            result.content_length = int(value.strip())
    return len(rest)


async def slow_client(url: str, rate: int, rcvbuf: int, duration: float) -> ClientResult:
    """GET *url* and read the body at *rate* bytes/s until *duration* is over or it ends."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    result = ClientResult()
    started = time.monotonic()
    sock = small_window_socket(rcvbuf)
    try:
        async with asyncio.timeout(duration + STALL_SECONDS):  # a stalled server cannot hang us
            await loop.sock_connect(sock, (parts.hostname, parts.port))
            request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                       "Connection: close\r\n\r\n")
            await loop.sock_sendall(sock, request.encode())
            result.received = await read_head(loop, sock, result)
            if result.status == 200:
                await paced_read(loop, sock, result, rate, started + duration)
    except (OSError, ValueError, IndexError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
        result.seconds = time.monotonic() - started
    return result


async def paced_read(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                     result: ClientResult, rate: int, deadline: float) -> None:
    begin = time.monotonic()
    while result.received < result.content_length:
        now = time.monotonic()
        if now >= deadline:
            return
        ahead = result.received / rate - (now - begin)  # seconds read ahead of the pace
        if ahead > 0:
            await asyncio.sleep(min(ahead, deadline - now))
            continue
        data = await loop.sock_recv(sock, READ_SIZE)
        if not data:
            result.error = f"closed early at {result.received} bytes"
            return
        result.received += len(data)


async def run_clients(url: str, args: argparse.Namespace) -> list[ClientResult]:
    rate, rcvbuf = parse_size(args.rate), parse_size(args.rcvbuf)
    tasks = []
    for _ in range(args.clients):
        tasks.append(asyncio.create_task(slow_client(url, rate, rcvbuf, args.duration)))
        await asyncio.sleep(0.01)  # a short stagger: no accept-backlog burst
    return list(await asyncio.gather(*tasks))


# --------------------------------------------------------------------------- one measurement


def measure(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Run the slow clients against *server* (already started) and sample its RSS."""
    with RssSampler(server.pid) as sampler:
        baseline = sampler.rss()
        clients = asyncio.run(run_clients(server.file_url, args))
        time.sleep(SETTLE_SECONDS)
        after = sampler.rss()
    ok = [c for c in clients if c.status == 200 and c.received > 0 and not c.error]
    rates = [c.received / c.seconds for c in ok if c.seconds > 0]
    return {
        "server": server.name, "baseline": baseline, "peak": sampler.peak,
        "peak_at_s": round(sampler.peak_at, 1), "after": after,
        "samples": len(sampler.samples), "clients": len(clients), "clients_ok": len(ok),
        "median_client_Bps": round(median(rates)), "received": sum(c.received for c in clients),
        "errors": sorted({f"{c.status} {c.error}".strip() for c in clients if c not in ok}),
    }


def measure_fresh(make: Any, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Start a fresh server, measure it, stop it (so the baseline is 'right after start')."""
    server: Server = make(tmp)
    with running([server]):
        return measure(server, args)


def report(runs: list[dict[str, Any]], args: argparse.Namespace, size: int) -> bool:
    rows = [[r["server"], f"{r['baseline'] / MIB:.1f}", f"{r['peak'] / MIB:.1f}",
             f"{(r['peak'] - r['baseline']) / MIB:.1f}", f"{r['after'] / MIB:.1f}",
             f"{r['clients_ok']}/{r['clients']}", f"{r['median_client_Bps'] / 1e6:.2f}",
             f"{r['received'] / MIB:.0f}"] for r in runs]
    print()
    print_table(["server", "baseline MiB", "peak MiB", "growth MiB", "after MiB",
                 "clients ok", "MB/s/client", "MiB sent"], rows)
    agent_peak: int = max(r["peak"] for r in runs if r["server"] == "agent")
    ok = agent_peak <= TARGET_PEAK
    ref = [r["peak"] for r in runs if r["server"] == "tornado-static"]
    ratio = agent_peak / ref[0] if ref else None
    print(f"\nagent peak RSS = {agent_peak / MIB:.1f} MiB (target ≤ {TARGET_PEAK // MIB} MiB: "
          f"{'met' if ok else 'MISSED'})"
          + (f"; agent/StaticFileHandler peak = {ratio:.2f}" if ratio else ""))
    print_json_line({
        "bench": "agent_rss", "size": size, "clients": args.clients, "rate": args.rate,
        "rcvbuf": args.rcvbuf, "duration": args.duration, "chunk_size": args.chunk_size,
        "agent_env": args.agent_env, "runs": runs, "agent_peak": agent_peak,
        "target_peak": TARGET_PEAK, "target_met": ok,
        "agent_vs_static_peak": round(ratio, 3) if ratio else None, "machine": machine_notes(),
    })
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = parse_size(args.size)
    path = ensure_file(f"bench-{size}.bin", size)
    agent_cfg: dict[str, Any] = {"max_concurrent_downloads": max(32, args.clients),
                                 "max_bandwidth": 0}
    if args.chunk_size:
        agent_cfg["chunk_size"] = args.chunk_size
    agent_env = parse_env(args.agent_env)
    runs: list[dict[str, Any]] = []
    with work_dir("fleetzip-rss-", keep=args.keep) as tmp:
        for n in range(args.rounds):
            runs.append(measure_fresh(
                lambda t: agent_server(t, path.parent, path.name, env=agent_env, **agent_cfg),
                tmp, args))
            print(f"agent round {n + 1}/{args.rounds}: peak {runs[-1]['peak'] / MIB:.1f} MiB",
                  flush=True)
        if not args.no_reference:
            runs.append(measure_fresh(lambda t: static_server(t, path.parent, path.name),
                                      tmp, args))
    ok = report(runs, args, size)
    bad = [(r["server"], r["errors"]) for r in runs if r["clients_ok"] != r["clients"]]
    if bad:
        print(f"the load did not happen as asked: {bad}", file=sys.stderr)
        return 3
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
