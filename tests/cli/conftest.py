"""Real agents and coordinators for the ``fleetzip`` CLI tests, and a runner for the CLI.

The CLI always runs as its own process (``python -m coordinator.client``), so exit codes,
stdout and stderr are exactly what an operator sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, free_port, write_yaml

CLI = [sys.executable, "-m", "coordinator.client"]
AGENT_HOSTS = ("127.0.0.31", "127.0.0.32", "127.0.0.33")
COORDINATOR_HOST = "127.0.0.30"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without fleetzip variables that would change what is tested."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETZIP_")}
    env.update(extra)
    return env


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout,
        env=dict(env) if env is not None else clean_env(), cwd=cwd,
    )


def make_files(root: Path, files: Mapping[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


class Fleet:
    """Starts agents and a coordinator in *tmp*, stops every one of them by PID."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers: list[ServerProcess] = []
        self.agent_token = tmp / "agent.token"
        self.agent_token.write_text("agent-secret-token\n")

    def agent(self, node: str, host: str, files: Mapping[str, bytes],
              **config: Any) -> ServerProcess:
        root = make_files(self.tmp / node / "logs", files)
        url = f"http://{host}:{free_port(host)}"
        data = {"node": node, "listen": url.split("//")[1], "roots": {"logs": str(root)},
                "token_file": str(self.agent_token), "shutdown_timeout": "1s",
                "log_level": "warning", **config}
        path = write_yaml(self.tmp / f"{node}.yml", data)
        return self._start(ServerProcess("agent", path, url, self.tmp / f"{node}.log"))

    def coordinator(self, agents: list[tuple[str, str]], **config: Any) -> ServerProcess:
        host = COORDINATOR_HOST
        url = f"http://{host}:{free_port(host)}"
        data = {"listen": url.split("//")[1],
                "agents": [{"name": n, "url": u, "labels": {"pos": str(i)}}
                           for i, (n, u) in enumerate(agents)],
                "agent_token_file": str(self.agent_token),
                "health": {"interval": "500ms", "timeout": "1s"},
                "audit_log": str(self.tmp / "audit.log"), "log_level": "warning", **config}
        path = write_yaml(self.tmp / "coordinator.yml", data)
        return self._start(ServerProcess("coordinator", path, url, self.tmp / "coord.log"))

    def _start(self, server: ServerProcess) -> ServerProcess:
        self.servers.append(server)
        return server.start()

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli
