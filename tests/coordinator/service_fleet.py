"""Helpers for the coordinator service tests: real agents on 127.0.0.N and a real
coordinator on 127.0.0.1, started as processes (`tests.support.ServerProcess`)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import ServerProcess, free_port, http_get, write_yaml

AGENT_TOKEN = "agent-secret-token-1"
CLIENT_TOKEN = "client-token-abc"
USER, PASSWORD = "alice", "s3cret pass"


def pattern(size: int, seed: int) -> bytes:
    line = f"node {seed} line ".encode() * 3 + b"\n"
    return (line * (size // len(line) + 1))[:size]


def write_tree(root: Path, files: dict[str, int], seed: int) -> None:
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pattern(size, seed))


def agent_process(tmp: Path, index: int, name: str, files: dict[str, int], *,
                  token_file: Path | None = None, register: dict[str, Any] | None = None,
                  ) -> ServerProcess:
    host = f"127.0.0.{index + 2}"
    port = free_port(host)
    root = tmp / name / "logs"
    write_tree(root, files, index)
    config: dict[str, Any] = {"node": name, "listen": f"{host}:{port}",
                              "roots": {"logs": str(root)}, "shutdown_timeout": "1s",
                              "chunk_size": "64KiB"}
    if token_file is not None:
        config["token_file"] = str(token_file)
    if register is not None:
        config["register"] = register
    path = write_yaml(tmp / f"{name}.yml", config)
    return ServerProcess("agent", path, f"http://{host}:{port}", tmp / f"{name}.log")


def coordinator_process(tmp: Path, config: dict[str, Any], name: str = "coord",
                        ) -> ServerProcess:
    port = free_port("127.0.0.1")
    config = {"listen": f"127.0.0.1:{port}", "log_level": "debug", **config}
    path = write_yaml(tmp / f"{name}.yml", config)
    return ServerProcess("coordinator", path, f"http://127.0.0.1:{port}", tmp / f"{name}.log")


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, body = http_get(url, headers)
    return status, json.loads(body)


def basic(user: str, password: str) -> dict[str, str]:
    value = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.1) -> Any:
    """The first truthy value of *predicate*, polled until *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def agents_by_name(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    status, body = get_json(url + "/api/agents", headers)
    assert status == 200, body
    return {a["name"]: a for a in body["agents"]}
