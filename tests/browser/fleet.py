"""The live fleet the browser tests run against: real agents on 127.0.0.2-4 with files of
known sizes, and a coordinator on 127.0.0.1 that polls their health every 0.5 s."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import ServerProcess, free_port, write_yaml

HEALTH_INTERVAL = "0.5s"
USER, PASSWORD = "alice", "correct horse battery staple"

# Per node: relative path -> size. Sizes differ per node so a wrong sum shows.
NODE_FILES = {
    "n1": {"app.log": 1234, "sub/deep/worker.log": 20_000, "notes.txt": 77},
    "n2": {"app.log": 4321, "sub/other.log": 999},
    "n3": {"app.log": 50_001, "readme.txt": 10},
}
BIG_FILE_SIZE = 32 * 1024 * 1024  # on n1's "big" root: a download that stays in progress


@dataclass
class Fleet:
    """Three agents and one coordinator, all real processes."""

    coordinator: ServerProcess
    agents: dict[str, ServerProcess]
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.coordinator.url

    def restart_agent(self, name: str) -> ServerProcess:
        old = self.agents[name]
        new = ServerProcess(old.module, old.config, old.url, old.log)
        self.agents[name] = new.start()
        return new


def pattern_bytes(size: int, seed: int) -> bytes:
    line = f"line from seed {seed} ".encode() * 4 + b"\n"
    return (line * (size // len(line) + 1))[:size]


def write_files(root: Path, files: dict[str, int], seed: int) -> None:
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pattern_bytes(size, seed))


def agent_process(tmp: Path, index: int, name: str) -> ServerProcess:
    host = f"127.0.0.{index + 2}"
    port = free_port(host)
    logs = tmp / name / "logs"
    write_files(logs, NODE_FILES[name], index)
    roots = {"logs": str(logs)}
    if name == "n1":
        big = tmp / name / "big"
        big.mkdir()
        with (big / "huge.bin").open("wb") as handle:
            handle.truncate(BIG_FILE_SIZE)  # sparse: reads as zeros, costs no disk
        roots["big"] = str(big)
    config = write_yaml(tmp / f"{name}.yml", {
        "node": name, "listen": f"{host}:{port}", "roots": roots, "shutdown_timeout": "1s",
    })
    return ServerProcess("agent", config, f"http://{host}:{port}", tmp / f"{name}.log")


def coordinator_process(tmp: Path, agents: dict[str, ServerProcess], name: str,
                        users_file: Path | None = None) -> ServerProcess:
    port = free_port("127.0.0.1")
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "agents": [
            {"name": node, "url": agent.url, "labels": {"env": "test", "rack": f"r{i % 2}"}}
            for i, (node, agent) in enumerate(agents.items())
        ],
        "registration": {"enabled": False},
        "health": {"interval": HEALTH_INTERVAL, "timeout": HEALTH_INTERVAL},
    }
    if users_file is not None:
        config["users_file"] = str(users_file)
    path = write_yaml(tmp / f"{name}.yml", config)
    return ServerProcess("coordinator", path, f"http://127.0.0.1:{port}", tmp / f"{name}.log")

