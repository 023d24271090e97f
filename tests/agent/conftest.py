"""Fixtures for agent tests: a file tree with secrets outside the root, and real agents."""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServerProcess, free_port, write_yaml

SECRET = b"FLEETZIP-SECRET-7f3a9c"  # written only to files outside every root


@dataclass
class Tree:
    base: Path
    root: Path  # served as root "logs"
    other: Path  # served as root "other"

    def write(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def make_tree(base: Path) -> Tree:
    """``base/data/logs`` (root) next to ``base/data/logs-secret`` and secrets all around."""
    data = base / "data"
    root, other, sibling = data / "logs", data / "other", data / "logs-secret"
    for d in (root / "sub" / "deep", other, sibling):
        d.mkdir(parents=True)
    for secret in (
        base / "secret.txt",
        data / "secret.txt",
        sibling / "secret.txt",
        sibling / "app.log",
    ):
        secret.write_bytes(SECRET + b" " + str(secret).encode())
    (root / "app.log").write_bytes(b"hello from logs\n")
    (root / "sub" / "b.log").write_bytes(b"b\n")
    (root / "sub" / "deep" / "c.txt").write_bytes(b"c\n")
    (other / "o.txt").write_bytes(b"other root\n")
    os.symlink(base / "secret.txt", root / "escape-file")
    os.symlink(sibling, root / "escape-dir")
    os.symlink("../logs-secret/secret.txt", root / "escape-relative")
    os.symlink("/etc", root / "etc-link")
    os.symlink(root / "sub" / "b.log", root / "inside-link")
    return Tree(base, root, other)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path)


AgentFactory = Callable[..., ServerProcess]


def agent_config(tree: Tree, port: int, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "node": "n1",
        "listen": f"127.0.0.1:{port}",
        "roots": {"logs": str(tree.root), "other": str(tree.other)},
        "chunk_size": "64KiB",
        "shutdown_timeout": "10s",
        "log_level": "debug",
    }
    config.update(overrides)
    return config


def start_agent(
    tree: Tree, workdir: Path, *, scheme: str = "http", context: Any = None, **overrides: Any
) -> ServerProcess:
    port = free_port()
    config = write_yaml(workdir / f"agent-{port}.yml", agent_config(tree, port, **overrides))
    server = ServerProcess(
        "agent", config, f"{scheme}://127.0.0.1:{port}", workdir / f"agent-{port}.log"
    )
    return server.start(context=context)


@pytest.fixture
def agent_factory(tree: Tree, tmp_path: Path) -> Iterator[AgentFactory]:
    started: list[ServerProcess] = []

    def factory(**overrides: Any) -> ServerProcess:
        server = start_agent(tree, tmp_path, **overrides)
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return make_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def shared_agent(
    shared_tree: Tree, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One agent (no auth, 64 KiB chunks) for the tests of a module that only read."""
    server = start_agent(shared_tree, tmp_path_factory.mktemp("agent"))
    yield server
    server.stop()


def raw_get(
    url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, Any, bytes]:
    """A request whose path goes out byte for byte; headers are case-insensitive."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()
