"""Reference server for the agent benchmarks: Tornado's own ``StaticFileHandler``.

A minimal Tornado app, one process, serving ``--root`` at ``/files/data/{path}`` (the same
URL shape as the agent) plus ``/livez`` so the bench can wait for it. Stops on SIGTERM.

    python bench/static_server.py --root bench/data --listen 127.0.0.1:8790
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import tornado.web


class LiveHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"status": "alive"})


def make_app(root: str) -> tornado.web.Application:
    return tornado.web.Application([
        (r"/livez", LiveHandler),
        (r"/files/data/(.*)", tornado.web.StaticFileHandler, {"path": root}),
    ])


async def serve(root: str, host: str, port: int) -> None:
    server = make_app(root).listen(port, address=host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="directory served as /files/data/")
    parser.add_argument("--listen", default="127.0.0.1:8790", help="host:port")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(args.root, host, int(port)))


if __name__ == "__main__":
    main()
