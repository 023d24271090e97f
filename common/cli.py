"""Start-up helpers for the service commands: config errors are one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from common.errors import ConfigError

T = TypeVar("T")
EXIT_CONFIG = 2


def service_arguments(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", "-c", required=True, help="YAML configuration file")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    return parser


def fail(prog: str, message: str, code: int = EXIT_CONFIG) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def load_or_exit(prog: str, loader: Callable[[str], T], path: str) -> T:
    """``loader(path)``, or one line on stderr and exit 2 when the file is bad."""
    try:
        return loader(path)
    except ConfigError as exc:
        fail(prog, str(exc))
