"""The agent's configuration file (SPEC §2), parsed once into frozen dataclasses."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from agent.budget import FLOOR
from common import config as cfg
from common.config import Duration, FieldError, Size
from common.names import check_node_name
from common.origin import parse_origin
from common.tls import TlsConfig

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Bytes read from disk and not yet sent, across all downloads (agent/budget.py). Chosen by
# measurement: bench/README.md, "Memory".
DEFAULT_READ_BUDGET = 32 * 1024 * 1024


def short_hostname() -> str:
    """The host name up to its first dot: the default node name."""
    return socket.gethostname().split(".", 1)[0] or "localhost"


@dataclass(frozen=True)
class RegisterConfig:
    """Self-registration with a coordinator (SPEC §3 Lifecycle)."""

    coordinator: str
    token_file: str | None = None
    interval: Duration = 10.0
    advertise_url: str | None = None  # default: derived from `listen` and `tls`
    labels: dict[str, str] = field(default_factory=dict)
    timeout: Duration = 5.0  # one registration request

    def __post_init__(self) -> None:
        if not self.coordinator.startswith(("http://", "https://")):
            raise FieldError("coordinator", f"expected an http(s):// URL, got {self.coordinator!r}")
        if self.advertise_url is not None:
            try:  # the coordinator accepts scheme://host:port only
                parse_origin(self.advertise_url)
            except ValueError as exc:
                raise FieldError("advertise_url", f"{exc}, got {self.advertise_url!r}") from None
        if self.interval <= 0:
            raise FieldError("interval", "must be more than 0")
        if self.token_file is not None and not os.access(self.token_file, os.R_OK):
            raise FieldError("token_file", f"cannot read {self.token_file}")


@dataclass(frozen=True)
class AgentConfig:
    roots: dict[str, str]
    node: str = field(default_factory=short_hostname)
    listen: str = "0.0.0.0:8701"
    token_file: str | None = None
    tls: TlsConfig | None = None
    chunk_size: Size = 1024 * 1024
    max_concurrent_downloads: int = 32
    max_bandwidth: Size = 0  # bytes/s shared by all downloads; 0 = unlimited
    read_budget: Size = DEFAULT_READ_BUDGET
    shutdown_timeout: Duration = 30.0
    register: RegisterConfig | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        try:
            check_node_name(self.node)
        except ValueError as exc:
            raise FieldError("node", str(exc)) from None
        try:
            cfg.parse_listen(self.listen)
        except ValueError as exc:
            raise FieldError("listen", str(exc)) from None
        self._check_roots()
        if self.token_file is not None and not os.access(self.token_file, os.R_OK):
            raise FieldError("token_file", f"cannot read {self.token_file}")
        if self.chunk_size < 1:
            raise FieldError("chunk_size", "must be at least 1 byte")
        if self.max_concurrent_downloads < 1:
            raise FieldError("max_concurrent_downloads", "must be at least 1")
        self._check_read_budget()
        if self.log_level.lower() not in LOG_LEVELS:
            raise FieldError("log_level", f"must be one of {', '.join(LOG_LEVELS)}")

    def _check_read_budget(self) -> None:
        """Every download slot needs its smallest piece set aside (agent/budget.py)."""
        need = self.max_concurrent_downloads * min(FLOOR, self.chunk_size)
        if self.read_budget < need:
            raise FieldError(
                "read_budget",
                f"{self.read_budget} bytes is less than 64KiB (or chunk_size, if smaller) for "
                f"each of the {self.max_concurrent_downloads} download slots: at least {need}",
            )

    def _check_roots(self) -> None:
        if not self.roots:
            raise FieldError("roots", "at least one root is required")
        for name, directory in self.roots.items():
            key = f"roots.{name}"
            if not name or "/" in name or name in (".", ".."):
                raise FieldError(key, "a root name must be one path segment")
            if not os.path.isdir(directory):
                raise FieldError(key, f"directory does not exist: {directory}")

    @property
    def host_port(self) -> tuple[str, int]:
        return cfg.parse_listen(self.listen)

    @property
    def real_roots(self) -> dict[str, str]:
        """Root name → the real path of its directory (symlinks resolved once, at start)."""
        return {name: os.path.realpath(path) for name, path in self.roots.items()}

    def advertise_url(self) -> str:
        """The URL the coordinator should use to reach this agent."""
        if self.register is not None and self.register.advertise_url:
            return self.register.advertise_url.rstrip("/")
        host, port = self.host_port
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        elif ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{port}"


def load(path: str | Path) -> AgentConfig:
    """Read and check an agent configuration file; raises `ConfigError`."""
    return cfg.load(AgentConfig, path)
