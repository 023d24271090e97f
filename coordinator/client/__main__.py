"""``fleetzip``: the command-line client (SPEC §5).

    fleetzip get     -c URL --root R [...]   download the merged zip, summarise status.json
    fleetzip agents  -c URL [--json]         the agents the coordinator knows
    fleetzip check   URL [...]               Nagios/Icinga plugin over /health
    fleetzip demo    [--serve] [--keep]      a coordinator and three agents on 127.0.0.x

Exit codes of get/agents/demo: 0 success (every node ok or skipped), 1 some node partial or
failed, 2 usage, authentication, HTTP or connection error, 130 interrupted (Ctrl-C or
SIGTERM). ``check`` follows the plugin convention 0/1/2/3 instead. Errors are one line on
stderr (``fleetzip: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from common import __version__
from coordinator.client.agents import agents_table, fetch_agents
from coordinator.client.check import (
    CheckResult,
    State,
    UsageError,
    parse_thresholds,
    parse_timeout,
    run_check,
)
from coordinator.client.get import Progress, Selection, download
from coordinator.client.http import ClientError, HttpOptions, credentials_from

PROG = "fleetzip"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
COORDINATOR_ENV = "FLEETZIP_COORDINATOR"


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors exit 2 — or, for ``check``, print an UNKNOWN plugin line."""

    plugin = False

    def error(self, message: str) -> NoReturn:
        if self.plugin:
            print(CheckResult(State.UNKNOWN, f"{self.prog}: {message}").line())
            sys.exit(State.UNKNOWN)
        super().error(message)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Download files from many nodes as one zip.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_get(commands)
    _add_agents(commands)
    _add_check(commands)
    _add_demo(commands)
    return parser


def _connection_options(parser: argparse.ArgumentParser, timeout: str,
                        timeout_help: str = "seconds without an answer before giving up") -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--token-file", metavar="FILE",
                       help="bearer token file (default: the FLEETZIP_TOKEN variable)")
    group.add_argument("--user", metavar="NAME",
                       help="HTTP Basic user; the password comes from FLEETZIP_PASSWORD")
    group.add_argument("--timeout", default=timeout, metavar="S",
                       help=f"{timeout_help} (default {timeout})")
    group.add_argument("--cacert", metavar="FILE", help="CA bundle to verify https:// servers")
    group.add_argument("--insecure", action="store_true",
                       help="do not verify the server's TLS certificate")


def _coordinator_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(COORDINATOR_ENV)
    parser.add_argument("-c", "--coordinator", metavar="URL", default=default,
                        required=default is None,
                        help=f"coordinator base URL (default: ${COORDINATOR_ENV})")


def _add_get(commands: argparse._SubParsersAction[Parser]) -> None:
    get = commands.add_parser("get", help="download the merged zip of many nodes")
    _coordinator_option(get)
    get.add_argument("--root", required=True, help="root name configured on the agents")
    get.add_argument("--path", help="a file or directory below the root")
    get.add_argument("--glob", help="glob relative to the root, ** allowed")
    get.add_argument("--since", help="only files modified since: a duration (2h) or ISO time")
    get.add_argument("--nodes", metavar="A,B", help="only these nodes")
    get.add_argument("--labels", metavar="K=V,...", help="only nodes with these labels")
    get.add_argument("--compression", choices=("stored", "deflate"))
    get.add_argument("--name", help="archive name the coordinator should give")
    get.add_argument("-o", "--output", metavar="FILE",
                     help="output file or directory (default: the server's name in .)")
    get.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    bar = get.add_mutually_exclusive_group()
    bar.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    bar.add_argument("--progress", action="store_true",
                     help="draw the progress bar even when stderr is not a terminal")
    _connection_options(get, "30")
    get.set_defaults(func=cmd_get)


def _add_agents(commands: argparse._SubParsersAction[Parser]) -> None:
    agents = commands.add_parser("agents", help="list the agents the coordinator knows")
    _coordinator_option(agents)
    agents.add_argument("--json", action="store_true", help="the raw list as JSON")
    _connection_options(agents, "10")
    agents.set_defaults(func=cmd_agents)


def _add_check(commands: argparse._SubParsersAction[Parser]) -> None:
    check = commands.add_parser(
        "check", help="Nagios/Icinga plugin: check an agent's or coordinator's /health",
        description="Thresholds: METRIC=RANGE, comma-separated or repeated; metrics time (s), "
        "free (bytes, every root), free_<root>, downloads, agents. RANGE is the plugin "
        "syntax [@][START:][END], e.g. time=2, free=10GiB:, agents=3:.",
    )
    check.plugin = True
    check.add_argument("url", help="agent or coordinator base URL (or its /health URL)")
    check.add_argument("-w", "--warning", action="append", default=[], metavar="M=RANGE",
                       help="WARNING when a metric is outside RANGE")
    check.add_argument("-c", "--critical", action="append", default=[], metavar="M=RANGE",
                       help="CRITICAL when a metric is outside RANGE")
    _connection_options(check, "10", "SECONDS[:STATE]: timeout, and the state it gives "
                        "(CRITICAL unless given)")
    check.set_defaults(func=cmd_check)


def _add_demo(commands: argparse._SubParsersAction[Parser]) -> None:
    demo = commands.add_parser(
        "demo", help="run a coordinator and three agents locally and download from them")
    demo.add_argument("--serve", action="store_true",
                      help="keep everything running until Ctrl-C (open the printed web page)")
    demo.add_argument("--keep", action="store_true",
                      help="keep the temporary directory (configs, logs, sample files, zip)")
    demo.set_defaults(func=cmd_demo)


def http_options(args: argparse.Namespace, timeout: float) -> HttpOptions:
    prompt = getpass.getpass if sys.stdin.isatty() else None
    credentials = credentials_from(args.token_file, args.user, prompt=prompt)
    return HttpOptions(credentials, timeout, args.cacert, args.insecure)


def _seconds(text: str) -> float:
    from common.config import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ClientError(f"bad --timeout: {exc}") from None
    if value <= 0:
        raise ClientError("bad --timeout: must be more than 0")
    return value


def cmd_get(args: argparse.Namespace) -> int:
    options = http_options(args, _seconds(args.timeout))
    selection = Selection(args.root, args.path, args.glob, args.since, args.nodes,
                          args.labels, args.compression, args.name)
    show_bar = args.progress or (not args.quiet and sys.stderr.isatty())
    result = download(args.coordinator, selection, args.output, options, Progress(show_bar))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(result.report())
    return result.exit_code


def cmd_agents(args: argparse.Namespace) -> int:
    agents = fetch_agents(args.coordinator, http_options(args, _seconds(args.timeout)))
    if args.json:
        print(json.dumps({"agents": agents}, indent=2))
    else:
        print(agents_table(agents))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    try:
        timeout, timeout_state = parse_timeout(args.timeout)
        warning = parse_thresholds(args.warning)
        critical = parse_thresholds(args.critical)
        options = http_options(args, timeout)
    except (UsageError, ClientError) as exc:
        result = CheckResult(State.UNKNOWN, str(exc))
    else:
        result = run_check(args.url, options, warning, critical, timeout_state)
    print(result.line())
    return int(result.state)


def cmd_demo(args: argparse.Namespace) -> int:
    from coordinator.client.demo import run_demo

    return run_demo(serve=args.serve, keep=args.keep)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (temp files, child servers) runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "check":  # a plugin reports even this as UNKNOWN
            parser.plugin, parser.prog = True, f"{PROG} check"
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args))
    except ClientError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
