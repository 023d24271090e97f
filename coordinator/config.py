"""The coordinator's configuration file (SPEC §2), parsed once into frozen dataclasses."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from common import config as cfg
from common.config import Duration, FieldError, Size
from common.names import check_node_name
from common.tls import TlsConfig
from coordinator.model import Compression


@dataclass(frozen=True)
class StaticAgent:
    name: str
    url: str
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            check_node_name(self.name)
        except ValueError as exc:
            raise FieldError("name", str(exc)) from None
        if not self.url.startswith(("http://", "https://")):
            raise FieldError("url", f"expected an http:// or https:// URL, got {self.url!r}")
        for char, part in (("?", "a query"), ("#", "a fragment"), ("@", "user info")):
            if char in self.url:
                raise FieldError("url", f"{part} ({char!r}) is not allowed in an agent URL, "
                                 f"got {self.url!r}")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RegistrationConfig:
    """Self-registration of agents; off unless ``tokens_file`` is set (coordinator.registration)."""

    enabled: bool = True
    ttl: Duration = 30.0
    tokens_file: str | None = None  # "name token" lines: each node's own credential
    allowed_networks: tuple[str, ...] = ()  # CIDRs a registered URL's host must lie in

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise FieldError("ttl", "must be more than 0")
        if self.tokens_file is not None and not os.access(self.tokens_file, os.R_OK):
            raise FieldError("tokens_file", f"cannot read {self.tokens_file}")
        self.networks  # noqa: B018 - raises FieldError on a bad CIDR

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """``allowed_networks`` parsed (empty: any address)."""
        networks = []
        for index, value in enumerate(self.allowed_networks):
            try:
                networks.append(ipaddress.ip_network(value, strict=True))
            except ValueError as exc:
                raise FieldError(f"allowed_networks[{index}]",
                                 f"{value!r} is not a network in CIDR form: {exc}") from None
        return tuple(networks)


@dataclass(frozen=True)
class HealthConfig:
    interval: Duration = 10.0
    timeout: Duration = 3.0
    concurrency: int = 32  # health polls in flight at once


@dataclass(frozen=True)
class DownloadConfig:
    compression: Compression = "stored"
    parallel: int = 4  # agent streams opened ahead of the one being zipped
    connect_timeout: Duration = 5.0
    idle_timeout: Duration = 30.0  # no byte from an agent for this long: give up on it
    resume_attempts: int = 3
    max_archive_size: Size = 0  # 0 = unlimited
    max_concurrent: int = 8  # merged downloads at once; more get 429
    max_per_user: int = 4  # merged downloads at once per user / token / address; more get 429
    client_timeout: Duration = 60.0  # a client that reads nothing for this long is dropped
    chunk_size: Size = 1024 * 1024  # size of the pieces written to the client

    def __post_init__(self) -> None:
        for name in ("parallel", "max_concurrent", "max_per_user", "chunk_size"):
            if getattr(self, name) < 1:
                raise FieldError(name, "must be at least 1")
        if self.client_timeout <= 0:
            raise FieldError("client_timeout", "must be more than 0s")
        if self.resume_attempts < 0:
            raise FieldError("resume_attempts", "cannot be negative")


@dataclass(frozen=True)
class AgentTlsConfig:
    """How the coordinator talks to https:// agents (all optional)."""

    ca: str | None = None  # CA bundle that signed the agents' certificates (default: system CAs)
    cert: str | None = None  # client certificate, for agents that require mutual TLS
    key: str | None = None  # its private key
    verify: bool = True  # false: accept any agent certificate (testing only)

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise FieldError(name, f"cannot read {path}")
        if (self.cert is None) != (self.key is None):
            raise FieldError("cert", "cert and key must be given together")


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: str = "0.0.0.0:8700"
    agents: tuple[StaticAgent, ...] = ()
    agents_file: str | None = None
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    agent_token_file: str | None = None
    token_file: str | None = None
    users_file: str | None = None
    tls: TlsConfig | None = None
    download: DownloadConfig = field(default_factory=DownloadConfig)
    audit_log: str = "stderr"  # "stderr" or a file path (appended)
    log_level: str = "info"
    agent_tls: AgentTlsConfig = field(default_factory=AgentTlsConfig)
    agents_file_interval: Duration = 5.0  # how often agents_file's mtime is checked
    shutdown_timeout: Duration = 10.0  # SIGTERM: grace for running downloads

    def __post_init__(self) -> None:
        try:
            cfg.parse_listen(self.listen)
        except ValueError as exc:
            raise FieldError("listen", str(exc)) from None
        names = [agent.name for agent in self.agents]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FieldError("agents", f"duplicate agent name {duplicates[0]!r}")
        for key in ("agent_token_file", "token_file", "users_file"):
            path = getattr(self, key)
            if path is not None and not os.access(path, os.R_OK):
                raise FieldError(key, f"cannot read {path}")

    @property
    def host_port(self) -> tuple[str, int]:
        return cfg.parse_listen(self.listen)


def load(path: str | Path) -> CoordinatorConfig:
    """Read and check a coordinator configuration file; raises `ConfigError`."""
    return cfg.load(CoordinatorConfig, path)
