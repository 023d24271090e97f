"""A lying agent's listing against the real coordinator's ``/api/plan``.

A real agent never lists a file outside the requested path, so the agent here is a small
HTTP server on 127.0.0.1 that answers ``/list`` with whatever the test wants.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coordinator.config import CoordinatorConfig, StaticAgent
from tests.coordinator.test_download import Coordinator
from tests.support import free_port, http_get

pytestmark = pytest.mark.timeout(60)


class LyingAgent(ThreadingHTTPServer):
    """Answers every ``GET /list/...`` with `entries`; records the request targets."""

    daemon_threads = True

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.targets: list[str] = []
        super().__init__(("127.0.0.1", free_port()), _ListingHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _ListingHandler(BaseHTTPRequestHandler):
    server: LyingAgent

    def do_GET(self) -> None:  # the name http.server calls
        self.server.targets.append(self.path)
        body = json.dumps({"root": "logs", "entries": self.server.entries}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def lying_fleet(tmp_path: Path) -> Iterator[tuple[LyingAgent, Coordinator]]:
    agent = LyingAgent([])
    config = CoordinatorConfig(listen="127.0.0.1:0", agents=(StaticAgent("liar", agent.url),),
                               audit_log=str(tmp_path / "audit.log"))
    coordinator = Coordinator(config).start()
    try:
        yield agent, coordinator
    finally:
        coordinator.stop()
        agent.stop()


def plan(coordinator: Coordinator, **params: str) -> tuple[int, Any]:
    query = urllib.parse.urlencode({"root": "logs", **params})
    status, _, body = http_get(f"{coordinator.url}/api/plan?{query}", timeout=20)
    return status, json.loads(body)


def file_entry(path: str, size: int = 10) -> dict[str, Any]:
    return {"path": path, "type": "file", "size": size, "mtime": 1_700_000_000.0}


def test_sibling_with_the_same_prefix_is_outside_the_requested_path(
        lying_fleet: tuple[LyingAgent, Coordinator]) -> None:
    """``sub-secret/x`` starts with ``sub`` but is not below ``sub/``: refused, recorded."""
    agent, coordinator = lying_fleet
    agent.entries = [file_entry("sub/a.log"), file_entry("sub/deep/b.log"),
                     file_entry("sub-secret/x"), file_entry("subx"), file_entry("sub")]
    status, body = plan(coordinator, path="sub")
    assert status == 200, body
    (node,) = body["nodes"]
    assert [f["path"] for f in node["files"]] == ["sub", "sub/a.log", "sub/deep/b.log"]
    assert len(node["rejected"]) == 2, node["rejected"]
    assert "'sub-secret/x'" in node["rejected"][0] and "outside" in node["rejected"][0]
    assert "'subx'" in node["rejected"][1] and "outside" in node["rejected"][1]
    listed = [t for t in agent.targets if t.startswith("/list/")]  # (also /readyz, /info)
    assert listed and all(t.startswith("/list/logs/sub") for t in listed)


def test_only_lying_entries_skip_the_node_and_say_why(
        lying_fleet: tuple[LyingAgent, Coordinator]) -> None:
    agent, coordinator = lying_fleet
    agent.entries = [file_entry("sub-secret/x")]
    status, body = plan(coordinator, path="sub")
    assert status == 200, body
    assert body["nodes"] == [] and body["files"] == 0
    (skipped,) = body["skipped"]
    assert skipped["state"] == "skipped"
    assert "refused" in skipped["error"] and "'sub-secret/x': outside" in skipped["error"]
