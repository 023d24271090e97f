"""Many real agent apps in one process: a simulated fleet for scale benchmarks.

Each simulated node is a full `agent.app.make_app(config)` application with its own
frozen `AgentConfig`, its own `HTTPServer` and its own listening address
(``127.<a>.<b>.<c>:<ephemeral port>``, so 500 nodes need no port juggling); they share one
event loop and one file-reading thread pool. When every app listens, the process writes a
JSON list ``[{"name", "url"}]`` to ``--ready`` and serves until SIGTERM/SIGINT.

    python bench/fleet_sim.py --first 0 --count 125 --root DIR --ready sim0.json

`bench/fleet_scale.py` starts a few of these processes behind one coordinator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.app import make_app
from agent.config import AgentConfig

FDS_PER_NODE = 16  # a listening socket, a few polls and downloads in flight


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards *wanted* (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def node_name(index: int) -> str:
    return f"sim{index:04d}"


def node_host(index: int) -> str:
    """A loopback address of its own for node *index* (127.31.0.2, 127.31.0.3, ...)."""
    return f"127.31.{index // 250}.{index % 250 + 2}"


def start_node(index: int, root: str, executor: ThreadPoolExecutor) -> dict[str, str]:
    host = node_host(index)
    sockets = bind_sockets(0, host, family=socket.AF_INET)
    port = sockets[0].getsockname()[1]
    config = AgentConfig(roots={"logs": root}, node=node_name(index), listen=f"{host}:{port}",
                         max_concurrent_downloads=8, log_level="warning")
    server = HTTPServer(make_app(config, executor=executor))
    server.add_sockets(sockets)
    return {"name": config.node, "url": f"http://{host}:{port}"}


async def serve(first: int, count: int, root: str, ready: Path) -> None:
    executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sim-io")
    nodes = [start_node(i, root, executor) for i in range(first, first + count)]
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(nodes))
    tmp.rename(ready)  # atomic: the reader never sees half a list
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    executor.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=0, help="index of the first node")
    parser.add_argument("--count", type=int, required=True, help="nodes in this process")
    parser.add_argument("--root", required=True, help="directory every node serves as 'logs'")
    parser.add_argument("--ready", type=Path, required=True, help="JSON list written when up")
    args = parser.parse_args(argv)
    raise_fd_limit(args.count * FDS_PER_NODE + 256)
    asyncio.run(serve(args.first, args.count, args.root, args.ready))


if __name__ == "__main__":
    main()
