"""SIGTERM drain, self-registration against a recording coordinator, config errors."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer

from tests.agent.conftest import AgentFactory, Tree, agent_config, raw_get
from tests.support import free_port, write_yaml


def test_sigterm_drains_then_exits_0(agent_factory: AgentFactory, tree: Tree) -> None:
    size = 16 * 1024 * 1024
    with (tree.root / "long.bin").open("wb") as f:
        f.truncate(size)
    agent = agent_factory(shutdown_timeout="20s")
    host, port = agent.url.removeprefix("http://").split(":")
    running = http.client.HTTPConnection(host, int(port), timeout=20)
    running.request("GET", "/files/logs/long.bin")
    response = running.getresponse()  # started; the agent now waits for us to read
    assert response.status == 200
    agent.signal(signal.SIGTERM)
    time.sleep(0.3)
    status, _, body = raw_get(agent.url, "/readyz")
    assert status == 503 and b"draining" in body
    status, headers, body = raw_get(agent.url, "/files/logs/app.log")
    assert status == 503 and json.loads(body)["error"]["code"] == "unavailable"
    assert headers["Retry-After"]
    assert raw_get(agent.url, "/livez")[0] == 200
    assert len(response.read()) == size  # the running download finishes
    running.close()
    assert agent.proc is not None
    assert agent.proc.wait(10) == 0
    assert "SIGTERM: draining (1 download(s) running)" in agent.output()


def test_drain_gives_up_after_shutdown_timeout(agent_factory: AgentFactory, tree: Tree) -> None:
    with (tree.root / "stuck.bin").open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    agent = agent_factory(shutdown_timeout="1s")
    host, port = agent.url.removeprefix("http://").split(":")
    stuck = http.client.HTTPConnection(host, int(port), timeout=20)
    stuck.request("GET", "/files/logs/stuck.bin")
    assert stuck.getresponse().status == 200  # and never read
    start = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.wait(10) == 0
    assert time.monotonic() - start < 5
    assert "still running after shutdown_timeout" in agent.output()
    stuck.close()


class Recorder:
    """A small coordinator stand-in that records what agents send it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        recorder = self

        class Record(tornado.web.RequestHandler):
            def post(self, *_: str) -> None:
                self.record()
                self.write({"ttl": 30})

            def delete(self, *_: str) -> None:
                self.record()
                self.write({"ok": True})

            def record(self) -> None:
                recorder.requests.append(
                    {
                        "method": self.request.method,
                        "path": self.request.path,
                        "auth": self.request.headers.get("Authorization"),
                        "body": json.loads(self.request.body) if self.request.body else None,
                    }
                )

        server = HTTPServer(tornado.web.Application([(r"/(.*)", Record)]))
        server.listen(self.port, "127.0.0.1")
        self.loop.call_soon(self.ready.set)
        self.loop.run_forever()
        server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        return [r["method"] for r in list(self.requests)]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    rec.thread.start()
    rec.ready.wait(5)
    yield rec
    rec.loop.call_soon_threadsafe(rec.loop.stop)
    rec.thread.join(5)


def test_registration_heartbeat_and_deregistration(
    agent_factory: AgentFactory, recorder: Recorder, tmp_path: Path
) -> None:
    token = tmp_path / "agent-token"
    token.write_text("shared-agent-secret\n")
    agent = agent_factory(
        register={
            "coordinator": recorder.url,
            "token_file": str(token),
            "interval": "200ms",
            "advertise_url": "http://127.0.0.1:9999",
            "labels": {"dc": "lab", "role": "db"},
        }
    )
    deadline = time.monotonic() + 5
    while recorder.methods().count("POST") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.methods().count("POST") >= 3  # a heartbeat, not a one-off
    first = recorder.requests[0]
    assert first["path"] == "/api/agents/register"
    assert first["auth"] == "Bearer shared-agent-secret"
    assert first["body"]["name"] == "n1"
    assert first["body"]["url"] == "http://127.0.0.1:9999"
    assert first["body"]["labels"] == {"dc": "lab", "role": "db"}
    assert first["body"]["version"]
    agent.signal(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.wait(10) == 0
    last = recorder.requests[-1]
    assert (last["method"], last["path"], last["auth"]) == (
        "DELETE",
        "/api/agents/n1",
        "Bearer shared-agent-secret",
    )
    with pytest.raises(ConnectionRefusedError):  # and the agent is gone
        raw_get(agent.url, "/livez")


def test_coordinator_down_does_not_stop_the_agent(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        register={"coordinator": f"http://127.0.0.1:{free_port()}", "interval": "200ms"}
    )
    time.sleep(0.5)
    assert raw_get(agent.url, "/readyz")[0] == 200
    assert "registration with" in agent.output()


# -- config errors ----------------------------------------------------------------------


def run_agent(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"colour": "blue"}, "colour"),
        ({"chunk_size": "lots"}, "chunk_size"),
        ({"max_concurrent_downloads": "many"}, "max_concurrent_downloads"),
        ({"read_budget": "lots"}, "read_budget"),
        ({"read_budget": 0}, "read_budget"),
        ({"read_budget": "1MiB"}, "read_budget"),  # < 64 KiB for each of the 32 slots
        ({"read_budget": "4MiB", "max_concurrent_downloads": 100}, "read_budget"),
        ({"shutdown_timeout": [1]}, "shutdown_timeout"),
        ({"roots": {"logs": "/nonexistent/fleetzip/logs"}}, "roots.logs"),
        ({"tls": {"cert": "CERT", "key": "/nonexistent/key.pem"}}, "tls.key"),
        ({"tls": {"cert": "CERT", "key": "GARBAGE"}}, "tls."),
        ({"token_file": "/nonexistent/tokens"}, "token_file"),
        ({"token_file": "EMPTY"}, "token_file"),
        ({"register": {"coordinator": "ftp://x"}}, "register.coordinator"),
        ({"register": {"coordinator": "http://x", "surprise": 1}}, "register.surprise"),
        # the coordinator accepts scheme://host:port only (issue 11, S1): said at start
        ({"register": {"coordinator": "http://x", "advertise_url": "http://h:1/x#"}},
         "register.advertise_url"),
        ({"register": {"coordinator": "http://x", "advertise_url": "http://u@h:1"}},
         "register.advertise_url"),
        ({"register": {"coordinator": "http://x", "advertise_url": "http://h"}},
         "register.advertise_url"),
        ({"listen": "nowhere"}, "listen"),
        ({"node": "bad name!"}, "node"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(
    tree: Tree, tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    empty = tmp_path / "empty-tokens"
    empty.write_text("\n")
    cert = tmp_path / "cert.pem"
    cert.write_text("not a cert\n")
    text = json.dumps(change).replace('"GARBAGE"', json.dumps(str(garbage)))
    text = text.replace('"EMPTY"', json.dumps(str(empty))).replace('"CERT"', json.dumps(str(cert)))
    config = write_yaml(tmp_path / "bad.yml", {**agent_config(tree, 1), **json.loads(text)})
    result = run_agent(config)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(config) in lines[0] and key in lines[0], lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_agent(tmp_path / "nope.yml")
    assert result.returncode == 2 and "nope.yml" in result.stderr
