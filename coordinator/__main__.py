"""``python -m coordinator --config FILE`` / ``fleetzip-coordinator``.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for a bad configuration (one
line naming the file, the key and the problem). SIGHUP reloads the token and users files,
the agent token and agents_file, and reopens the audit log; a bad file keeps the old one.

SIGTERM: ``/readyz`` answers 503 at once and new downloads get 503; running downloads
get up to ``shutdown_timeout`` (default 10s) to finish (the port keeps answering
meanwhile, so load balancers see the 503); then the listening socket closes, what is still
open is cut off, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from tornado.httpserver import HTTPServer

from common.cli import fail, load_or_exit, service_arguments
from common.errors import ConfigError
from common.logs import setup_logging
from coordinator import config as coordinator_config
from coordinator.app import CoordinatorService, make_app

PROG = "fleetzip-coordinator"
CLOSE_TIMEOUT = 2.0  # seconds to close the remaining connections after the grace period
# Limits of the HTTP layer, before any handler runs. Tornado's defaults would let a client
# hold a connection for an hour by sending its headers a byte at a time (or not at all).
HEADER_TIMEOUT = 10.0  # s to send a request's headers; also how long an idle keep-alive lasts
BODY_TIMEOUT = 30.0  # s to send a request body (registrations are a few hundred bytes)
MAX_HEADER_SIZE = 64 * 1024  # request line + headers; larger: the connection is closed
MAX_BODY_SIZE = 1024 * 1024  # no route takes more (a registration is capped at 64 KiB)
log = logging.getLogger("coordinator")


async def serve(config: coordinator_config.CoordinatorConfig,
                service: CoordinatorService) -> None:
    app = make_app(config, service=service)
    host, port = config.host_port
    ssl_options = config.tls.server_context() if config.tls else None
    server = HTTPServer(app, ssl_options=ssl_options, xheaders=False,
                        idle_connection_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT,
                        max_header_size=MAX_HEADER_SIZE, max_body_size=MAX_BODY_SIZE)
    try:
        server.listen(port, address=host)
    except OSError as exc:
        fail(PROG, f"cannot listen on {config.listen}: {exc}", code=1)
    service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, service.reload)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    scheme = "https" if config.tls else "http"
    log.info("coordinator listening on %s://%s:%d, %d agent(s) known", scheme, host, port,
             len(service.registry.agents()))
    await stop.wait()
    log.info("shutting down: readiness off, up to %.0fs for running downloads",
             config.shutdown_timeout)
    await service.drain(config.shutdown_timeout)
    server.stop()
    # What is still open now (idle keep-alive, downloads past the grace) is cut off;
    # closing a download's connection cancels its agent fetches.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.close_all_connections(), CLOSE_TIMEOUT)
    await service.stop()


def main(argv: list[str] | None = None) -> int:
    args = service_arguments(PROG, "fleetzip coordinator").parse_args(argv)
    config = load_or_exit(PROG, coordinator_config.load, args.config)
    setup_logging(config.log_level)
    try:
        service = CoordinatorService(config)
    except ConfigError as exc:
        fail(PROG, str(exc))
    if args.check_config:
        print(f"{args.config}: OK")
        return 0
    log.info("%s", service.registration.describe())
    if config.token_file is None and config.users_file is None:
        log.warning("no token_file or users_file: anyone who can reach the coordinator "
                    "may download")
    asyncio.run(serve(config, service))
    return 0


if __name__ == "__main__":
    sys.exit(main())
