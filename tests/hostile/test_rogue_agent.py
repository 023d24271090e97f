"""S6: one rogue agent next to a real one must cost only its own node.

A small fake agent (a real HTTP server in this process) answers ``/readyz``, ``/info`` and
``/list`` with what a broken or hostile agent might send: a size of 2**64 (once an
OverflowError and a 500 for every node's plan and download), ``NaN`` and ``Infinity``
mtimes (once invalid JSON from ``/api/plan``), wrong types, a listing nested a million
levels deep, and another fake lists two files of 2**63-1 bytes (each legal, together more
than an archive can hold). The real agent's node must plan and download as always, and
every refusal must be recorded for the rogue node.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Fleet, check_archive, fetch, node_status, status_of
from tests.support import http_get

GOOD = b"good bytes from the fake\n"
ROGUE_LISTING = (
    '{"root": "logs", "entries": ['
    f'{{"path": "good.log", "size": {len(GOOD)}, "mtime": 1700000000, "type": "file"}},'
    '{"path": "huge.bin", "size": 18446744073709551616, "mtime": 1700000000, "type": "file"},'
    '{"path": "nan.log", "size": 1, "mtime": NaN, "type": "file"},'
    '{"path": "inf.log", "size": 1, "mtime": Infinity, "type": "file"},'
    '{"path": "far.log", "size": 1, "mtime": 1e300, "type": "file"},'
    '{"path": "bool.log", "size": true, "mtime": 1, "type": "file"},'
    '{"path": "float.log", "size": 1.5, "mtime": 1, "type": "file"},'
    '{"path": 42, "size": 1, "mtime": 1, "type": "file"},'
    '{"path": "kind.log", "size": 1, "mtime": 1, "type": ["file"]},'
    '{"path": "../escape.log", "size": 1, "mtime": 1, "type": "file"}'
    "]}"
)
TOO_BIG_LISTING = json.dumps({"root": "logs", "entries": [
    {"path": f"big{i}.bin", "size": 2**63 - 1, "mtime": 1700000000, "type": "file"}
    for i in range(2)]})
DEEP_LISTING = "[" * 1_000_000 + "]" * 1_000_000


class FakeAgent:
    """A rogue agent: healthy, answering /list with *listing* (and /list/deep with JSON
    nested too deep for any parser), and serving ``good.log``."""

    def __init__(self, host: str, name: str, listing: str) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.name, self.listing = name, listing
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?")[0]
        if path == "/readyz":
            self.send(request, '{"status": "pass"}')
        elif path == "/info":
            self.send(request, json.dumps({"node": self.name, "version": "6.6.6",
                                           "roots": ["logs", "deep"], "labels": {}}))
        elif path.startswith("/list/deep"):
            self.send(request, DEEP_LISTING)
        elif path.startswith("/list/logs"):
            self.send(request, self.listing)
        elif path == "/files/logs/good.log":
            self.send(request, GOOD.decode(), "application/octet-stream")
        else:
            self.send(request, '{"error": {"code": "not_found", "message": "no"}}', status=404)

    @staticmethod
    def send(request: BaseHTTPRequestHandler, body: str, content_type: str = "application/json",
             status: int = 200) -> None:
        data = body.encode()
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


REAL_FILES = {"app.log": b"real agent line\n" * 500, "sub/b.log": b"b" * 3000}


@pytest.fixture
def rogue_fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    try:
        fleet.add_agent("real", REAL_FILES)
        fleet.add_fake("rogue", FakeAgent(fleet.host(), "rogue", ROGUE_LISTING))
        fleet.add_fake("greedy", FakeAgent(fleet.host(), "greedy", TOO_BIG_LISTING))
        fleet.start_agents()
        fleet.start_coordinator()
        fleet.wait_healthy(3)
        yield fleet
    finally:
        fleet.close()


def strict_json(body: bytes) -> Any:
    """JSON as RFC 8259 defines it: no NaN or Infinity (Python's json accepts both)."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"the answer holds {name}, which is not JSON")
    return json.loads(body, parse_constant=refuse)


REFUSED = ("huge.bin", "nan.log", "inf.log", "far.log", "bool.log", "float.log", "42",
           "kind.log", "escape.log")


def assert_refusals_named(reasons: list[str]) -> None:
    text = "\n".join(reasons)
    for name in REFUSED:
        assert name in text, f"the refusal of {name} is not recorded: {reasons}"


def test_rogue_listing_costs_only_its_own_node(rogue_fleet: Fleet) -> None:
    status, _, body = http_get(rogue_fleet.url + "/api/plan?root=logs")
    assert status == 200, body[:500]
    plan = strict_json(body)
    nodes = {n["node"]: n for n in plan["nodes"]}
    assert {f["path"] for f in nodes["real"]["files"]} == set(REAL_FILES)
    assert [f["path"] for f in nodes["rogue"]["files"]] == ["good.log"]
    assert_refusals_named(nodes["rogue"]["rejected"])
    greedy = {s["node"]: s for s in plan["skipped"]}["greedy"]
    assert greedy["state"] == "failed" and "more than an archive holds" in greedy["error"]
    assert isinstance(plan["archive_size"], int)


def test_rogue_listing_download_keeps_the_good_node_intact(rogue_fleet: Fleet,
                                                          tmp_path: Path) -> None:
    got = fetch(rogue_fleet.url + "/api/download?root=logs", tmp_path / "fleet.zip")
    assert got.status == 200 and got.complete, (got, rogue_fleet.logs())
    archive = check_archive(got.path)
    for rel, data in REAL_FILES.items():
        assert archive.read(f"real/logs/{rel}") == data
    assert archive.read("rogue/logs/good.log") == GOOD
    assert not [n for n in archive.namelist() if "huge" in n or "nan" in n]
    status = status_of(archive)
    assert node_status(status, "real")["state"] == "ok"
    assert_refusals_named(node_status(status, "rogue")["rejected"])
    assert node_status(status, "greedy")["state"] == "failed"
    table = archive.read("_fleetzip/status.txt").decode()
    assert "LISTED ENTRY REFUSED" in table and "huge.bin" in table


def test_listing_nested_too_deep_fails_that_node_only(rogue_fleet: Fleet) -> None:
    status, _, body = http_get(rogue_fleet.url + "/api/plan?root=deep&nodes=rogue,real")
    assert status == 200, body[:500]
    skipped = {s["node"]: s for s in strict_json(body)["skipped"]}
    assert skipped["rogue"]["state"] == "failed"
    assert "invalid JSON" in skipped["rogue"]["error"]
    assert skipped["real"]["state"] == "skipped"
