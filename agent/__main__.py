"""``fleetzip-agent --config FILE`` / ``python -m agent --config FILE``."""

from __future__ import annotations

import asyncio
import sys

from agent.config import AgentConfig, load
from agent.server import AgentServer
from common.auth import TokenStore
from common.cli import fail, load_or_exit, service_arguments
from common.logs import setup_logging

PROG = "fleetzip-agent"


def open_tokens(path: str, config: AgentConfig) -> TokenStore:
    """The agent's token store; a bad token file is a config error (exit 2)."""
    try:
        return TokenStore.open(config.token_file)
    except (OSError, ValueError) as exc:
        fail(PROG, f"{path}: token_file: {exc}")


def main(argv: list[str] | None = None) -> None:
    args = service_arguments(PROG, "Serve this node's files to a fleetzip coordinator.").parse_args(
        argv
    )
    config = load_or_exit(PROG, load, args.config)
    tokens = open_tokens(args.config, config)
    if args.check_config:
        print(f"{args.config}: ok")
        return
    setup_logging(config.log_level)
    try:
        code = asyncio.run(AgentServer(config, tokens).run())
    except OSError as exc:  # typically the listen address is taken
        fail(PROG, f"cannot listen on {config.listen}: {exc}", code=1)
    sys.exit(code)


if __name__ == "__main__":
    main()
