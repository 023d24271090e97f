"""A real agent (and coordinator) process with marker files outside the root.

Every hostile test checks two things besides the status: no answer ever holds the
marker (a byte from outside the root) and no answer names the temporary folder (no path
leaks).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import Fleet
from tests.hostile.rawhttp import RawAnswer

TOKEN = "hostile-test-token-" + "x" * 20
# registration.tokens_file of the coordinator target: node "ok" may register itself
REGISTER_NAME, REGISTER_TOKEN = "ok", "ok-registration-token-" + "y" * 16


@dataclass
class Target:
    host: str
    port: int
    token: str
    marker: bytes
    secret_dir: Path
    base_dir: Path

    @property
    def auth(self) -> list[tuple[bytes, bytes]]:
        return [(b"Authorization", b"Bearer " + self.token.encode())]

    def assert_nothing_leaked(self, answer: RawAnswer) -> None:
        assert self.marker not in answer.raw, "a byte from outside the root was served"
        assert str(self.base_dir).encode() not in answer.raw, "a filesystem path leaked"


def build_tree(base: Path) -> tuple[Path, bytes]:
    """A root with tricky names and symlinks, and a secret folder beside it."""
    marker = f"FLEETZIP-MARKER-{uuid.uuid4().hex}".encode()
    secret = base / "secret"
    secret.mkdir()
    (secret / "MARKER.txt").write_bytes(marker)
    sibling = base / "logs-secret"  # shares the root's name as a prefix
    sibling.mkdir()
    (sibling / "x.log").write_bytes(marker)
    root = base / "logs"
    (root / "sub").mkdir(parents=True)
    (root / "app.log").write_bytes(b"hello\n" * 100)
    (root / "sub" / "a.log").write_bytes(b"a" * 1000)
    (root / "ünïcode €.log").write_bytes(b"u" * 10)
    (root / "empty.log").write_bytes(b"")
    os.symlink(secret / "MARKER.txt", root / "escape.log")
    os.symlink("../secret", root / "updir")
    os.symlink("../logs-secret/x.log", root / "sibling.log")
    os.symlink(base, root / "abs")
    return root, marker


@pytest.fixture(scope="session")
def hostile_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="session")
def agent_target(hostile_base: Path) -> Iterator[Target]:
    base = hostile_base / "agent"
    base.mkdir()
    root, marker = build_tree(base)
    token_file = base / "token"
    token_file.write_text(TOKEN + "\n")
    fleet = Fleet(base)
    node = fleet.add_agent("hostile", {}, roots={"logs": str(root)}, token_file=str(token_file),
                           max_concurrent_downloads=64)
    try:
        fleet.start_agents()
        host, port = node.url.removeprefix("http://").split(":")
        yield Target(host, int(port), TOKEN, marker, base / "secret", base)
    finally:
        fleet.close()


@pytest.fixture(scope="session")
def coordinator_target(hostile_base: Path) -> Iterator[Target]:
    """A coordinator with bearer tokens and a Basic user, in front of two agents; node
    ``ok`` may register (`REGISTER_TOKEN`)."""
    from coordinator.users import hash_password  # the coordinator lands later than the agent

    base = hostile_base / "coordinator"
    base.mkdir()
    root, marker = build_tree(base)
    token_file = base / "token"
    token_file.write_text(TOKEN + "\n")
    users_file = base / "users"
    users_file.write_text(f"alice:{hash_password('correct horse')}\n")
    node_tokens = base / "registration-tokens"
    node_tokens.write_text(f"{REGISTER_NAME} {REGISTER_TOKEN}\n")
    fleet = Fleet(base, client_headers={"Authorization": f"Bearer {TOKEN}"})
    fleet.add_agent("a1", {}, roots={"logs": str(root)})
    fleet.add_agent("a2", {"x.log": b"x" * 100})
    try:
        fleet.start_agents()
        coordinator = fleet.start_coordinator(token_file=str(token_file),
                                              users_file=str(users_file),
                                              registration={"tokens_file": str(node_tokens)})
        fleet.wait_healthy(2)
        host, port = coordinator.url.removeprefix("http://").split(":")
        yield Target(host, int(port), TOKEN, marker, base / "secret", base)
    finally:
        fleet.close()
