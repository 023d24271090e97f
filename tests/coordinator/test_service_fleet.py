"""The coordinator against several REAL agents on 127.0.0.2-4: health polling, plan,
node-file proxy, self-registration of a real agent."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.coordinator.service_fleet import (
    AGENT_TOKEN,
    agent_process,
    agents_by_name,
    coordinator_process,
    get_json,
    pattern,
    wait_for,
)
from tests.support import ServerProcess, http_get

FILES = {
    "n1": {"app.log": 1234, "sub/deep/worker.log": 20_000, "notes.txt": 77},
    "n2": {"app.log": 4321, "sub/other.log": 999},
    "n3": {"app.log": 50_001, "readme.txt": 10, "big.bin": 300_001},
}


@dataclass
class Fleet:
    coordinator: ServerProcess
    agents: dict[str, ServerProcess]

    @property
    def url(self) -> str:
        return self.coordinator.url

    def plan(self, **params: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        status, body = get_json(f"{self.url}/api/plan?{urllib.parse.urlencode(params)}")
        return status, body


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    token = tmp_path / "agent-token"
    token.write_text(AGENT_TOKEN + "\n")
    agents = {name: agent_process(tmp_path, i, name, files, token_file=token)
              for i, (name, files) in enumerate(FILES.items())}
    coordinator = coordinator_process(tmp_path, {
        "agents": [{"name": n, "url": a.url, "labels": {"rack": f"r{i % 2}"}}
                   for i, (n, a) in enumerate(agents.items())],
        "agent_token_file": str(token),
        "health": {"interval": "0.3s", "timeout": "1s"},
        "download": {"max_archive_size": "200KB", "connect_timeout": "2s"},
    })
    started: list[ServerProcess] = []
    fleet = Fleet(coordinator, agents)
    try:
        for server in [*agents.values(), coordinator]:
            started.append(server.start())
        wait_for(lambda: http_get(coordinator.url + "/readyz")[0] == 200)
        yield fleet
    finally:
        # fleet.agents too: a test may replace an agent with a restarted process
        for server in [*reversed(started), *fleet.agents.values()]:
            server.stop()


def test_health_polling_follows_a_killed_and_restarted_agent(fleet: Fleet) -> None:
    agents = wait_for(lambda: (a := agents_by_name(fleet.url))
                      and all(x["health"] == "pass" for x in a.values()) and a)
    assert agents["n1"]["version"] and agents["n1"]["last_seen"]
    assert get_json(fleet.url + "/readyz")[1]["agents_healthy"] == 3
    fleet.agents["n2"].stop()
    n2 = wait_for(lambda: (a := agents_by_name(fleet.url)["n2"])["health"] == "fail" and a)
    assert "refused" in n2["error"]
    _, health = get_json(fleet.url + "/health")
    assert health["status"] == "warn"
    assert health["checks"]["agents:healthy"][0]["observedValue"] == 2
    old = fleet.agents["n2"]
    fleet.agents["n2"] = ServerProcess(old.module, old.config, old.url, old.log).start()
    wait_for(lambda: agents_by_name(fleet.url)["n2"]["health"] == "pass")


def test_plan_over_three_agents_with_one_down(fleet: Fleet) -> None:
    status, plan = fleet.plan(root="logs", glob="**/*.log", nodes="n1,n2")
    assert status == 200, plan
    files = {(n["node"], f["path"]): f for n in plan["nodes"] for f in n["files"]}
    assert {k: f["size"] for k, f in files.items()} == {
        ("n1", "app.log"): 1234, ("n1", "sub/deep/worker.log"): 20_000,
        ("n2", "app.log"): 4321, ("n2", "sub/other.log"): 999}
    assert files[("n1", "sub/deep/worker.log")]["entry"] == "n1/logs/sub/deep/worker.log"
    assert plan["files"] == 4 and plan["total_bytes"] == 1234 + 20_000 + 4321 + 999
    assert {n["node"]: n["bytes"] for n in plan["nodes"]} == {"n1": 21234, "n2": 5320}
    assert plan["skipped"] == [] and plan["request"]["nodes"] == ["n1", "n2"]
    assert plan["sized"] is True and plan["archive_size"] > plan["total_bytes"]

    status, plan = fleet.plan(root="logs", path="app.log", labels="rack=r0")
    assert status == 200  # rack r0: n1 and n3
    assert [(n["node"], [(f["path"], f["size"]) for f in n["files"]]) for n in plan["nodes"]] \
        == [("n1", [("app.log", 1234)]), ("n3", [("app.log", 50_001)])]

    # a directory without a glob is taken whole, subdirectories included
    status, plan = fleet.plan(root="logs", path="sub")
    assert status == 200, plan
    assert [(n["node"], [f["path"] for f in n["files"]]) for n in plan["nodes"]] \
        == [("n1", ["sub/deep/worker.log"]), ("n2", ["sub/other.log"])]
    assert [s["node"] for s in plan["skipped"]] == ["n3"]

    fleet.agents["n2"].stop()
    status, plan = fleet.plan(root="logs", path="app.log")
    assert status == 200
    assert sorted(n["node"] for n in plan["nodes"]) == ["n1", "n3"]
    assert len(plan["skipped"]) == 1
    skipped = plan["skipped"][0]
    assert skipped["node"] == "n2" and skipped["state"] == "failed"
    assert "refused" in skipped["error"]


def test_plan_errors(fleet: Fleet) -> None:
    for params, parameter in [
        ({}, "root"), ({"root": "logs", "nodes": "n1,nope"}, "nodes"),
        ({"root": "logs", "glob": "a**"}, "glob"), ({"root": "logs", "since": "soon"}, "since"),
        ({"root": "logs", "compression": "xz"}, "compression"),
        ({"root": "logs", "labels": "rack"}, "labels"),
    ]:
        status, body = fleet.plan(**params)
        assert status == 400, (params, body)
        assert body["error"]["message"].startswith(parameter + ":"), body
    status, body = fleet.plan(root="logs", labels="rack=r9")
    assert status == 404 and "no node matches" in body["error"]["message"]
    # a root no selected agent has is a bad parameter (SPEC §4), not an empty plan
    status, body = fleet.plan(root="nosuchroot")
    assert status == 400, body
    assert body["error"]["message"] == "root: no selected agent has a root named 'nosuchroot'"
    # over max_archive_size (200KB): n3's 300 kB log
    status, body = fleet.plan(root="logs", nodes="n3", path="big.bin")
    assert status == 413
    message = body["error"]["message"]
    assert "max_archive_size = 200000" in message
    planned = int(message.split("the planned archive is ")[1].split()[0])
    assert planned > 300_001


def test_node_file_proxy_is_byte_exact_with_range_and_conditionals(fleet: Fleet) -> None:
    url = fleet.url + "/api/nodes/n3/files/logs/big.bin"
    expected = pattern(300_001, 2)
    assert (Path(fleet.agents["n3"].config).parent / "n3/logs/big.bin").read_bytes() == expected
    status, headers, body = http_get(url)
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
    assert headers["content-length"] == "300001" and headers["accept-ranges"] == "bytes"
    etag = headers["etag"]
    assert "attachment" in headers["content-disposition"]

    status, headers, body = http_get(url, {"Range": "bytes=100-199"})
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 206 and body == expected[100:200]
    assert headers["content-range"] == "bytes 100-199/300001"

    status, _, body = http_get(url, {"Range": "bytes=299990-", "If-Range": etag})
    assert status == 206 and body == expected[299_990:]
    status, _, body = http_get(url, {"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert status == 200 and len(body) == 300_001
    assert http_get(url, {"If-None-Match": etag})[0] == 304
    assert http_get(url, {"Range": "bytes=400000-"})[0] == 416

    status, _, body = http_get(fleet.url + "/api/nodes/n1/files/logs/missing.log")
    assert status == 404
    status, _, body = http_get(fleet.url + "/api/nodes/zz/files/logs/app.log")
    assert status == 404 and b"no agent named" in body
    fleet.agents["n1"].stop()
    status, _, body = http_get(fleet.url + "/api/nodes/n1/files/logs/app.log")
    assert status == 502 and json.loads(body)["error"]["code"] == "bad_gateway"


def test_a_real_agent_registers_and_deregisters(tmp_path: Path) -> None:
    token = tmp_path / "agent-token"
    token.write_text(AGENT_TOKEN + "\n")
    own_token = tmp_path / "reg1-registration-token"  # this node's own credential
    own_token.write_text("reg1-registration-token-123\n")
    node_tokens = tmp_path / "registration-tokens"
    node_tokens.write_text("reg1 reg1-registration-token-123\n")
    coord = coordinator_process(tmp_path, {"agent_token_file": str(token),
                                           "registration": {"tokens_file": str(node_tokens)},
                                           "health": {"interval": "0.3s"}})
    with coord.start():
        agent = agent_process(tmp_path, 5, "reg1", {"a.log": 5}, token_file=token, register={
            "coordinator": coord.url, "token_file": str(own_token), "interval": "0.5s",
            "labels": {"team": "ops"}})
        with agent.start():
            reg1 = wait_for(lambda: (a := agents_by_name(coord.url).get("reg1"))
                            and a["health"] == "pass" and a)
            assert reg1["source"] == "registered" and reg1["labels"] == {"team": "ops"}
            assert reg1["url"] == agent.url
            status, plan = get_json(coord.url + "/api/plan?root=logs&labels=team%3Dops")
            assert status == 200 and plan["nodes"][0]["files"][0]["size"] == 5
        wait_for(lambda: "reg1" not in agents_by_name(coord.url))  # deregistered at shutdown


def test_download_through_the_wiring_writes_one_audit_line(tmp_path: Path) -> None:
    import io
    import zipfile

    token = tmp_path / "agent-token"
    token.write_text(AGENT_TOKEN + "\n")
    audit = tmp_path / "audit.jsonl"
    agents = {n: agent_process(tmp_path, i, n, FILES[n], token_file=token)
              for i, n in enumerate(("n1", "n2"))}
    coord = coordinator_process(tmp_path, {
        "agents": [{"name": n, "url": a.url} for n, a in agents.items()],
        "agent_token_file": str(token), "audit_log": str(audit),
        "health": {"interval": "0.3s"},
    })
    with agents["n1"].start(), agents["n2"].start(), coord.start():
        status, _headers, body = http_get(coord.url + "/api/download?root=logs&glob=*.log")
        assert status == 200
        names = zipfile.ZipFile(io.BytesIO(body)).namelist()
        assert {"n1/logs/app.log", "n2/logs/app.log"} <= set(names)
        line = wait_for(lambda: audit.exists() and audit.read_text().strip())
    records = [json.loads(x) for x in line.splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["event"] == "download" and record["user"] == "anonymous"
    assert record["request"]["root"] == "logs" and record["request"]["glob"] == "*.log"
    assert record["bytes_sent"] == len(body) and record["result"] == "ok"
    assert len(record["nodes"]) == 2


def _agent_connections(coord: ServerProcess, agent_url: str) -> int:
    import psutil

    port = urllib.parse.urlsplit(agent_url).port
    conns = psutil.Process(coord.pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.raddr and c.raddr.port == port
               and c.status == psutil.CONN_ESTABLISHED)


def test_proxy_client_leaving_aborts_the_agent_fetch(tmp_path: Path) -> None:
    import socket
    import time

    agent = agent_process(tmp_path, 6, "big", {"small.txt": 3})
    with (tmp_path / "big" / "logs" / "huge.bin").open("wb") as handle:
        handle.truncate(256 * 1024 * 1024)  # sparse: reads as zeros, costs no disk
    coord = coordinator_process(tmp_path, {"agents": [{"name": "big", "url": agent.url}],
                                           "health": {"interval": "5s"}})
    with agent.start(), coord.start():
        host, port = urllib.parse.urlsplit(coord.url).netloc.split(":")
        client = socket.create_connection((host, int(port)))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(b"GET /api/nodes/big/files/logs/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(1024).startswith(b"HTTP/1.1 200")
        # the client reads nothing more: flow control holds the agent stream open, paused
        wait_for(lambda: _agent_connections(coord, agent.url) == 1)
        time.sleep(0.5)
        rss_mb = __import__("psutil").Process(coord.pid).memory_info().rss / 2**20
        assert rss_mb < 150, rss_mb  # 256 MiB were not buffered
        client.close()
        wait_for(lambda: _agent_connections(coord, agent.url) == 0, timeout=5)
        # an agent that went silent: the client leaving still closes the agent connection
        import signal

        agent.signal(signal.SIGSTOP)
        try:
            client = socket.create_connection((host, int(port)))
            client.sendall(b"GET /api/nodes/big/files/logs/small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(lambda: _agent_connections(coord, agent.url) == 1)
            client.close()
            wait_for(lambda: _agent_connections(coord, agent.url) == 0, timeout=5)
        finally:
            agent.signal(signal.SIGCONT)


def test_sigterm_with_a_running_download_drains_then_exits_0(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    agent = agent_process(tmp_path, 7, "slow", {"small.txt": 3})
    with (tmp_path / "slow" / "logs" / "huge.bin").open("wb") as handle:
        handle.truncate(128 * 1024 * 1024)
    coord = coordinator_process(tmp_path, {"agents": [{"name": "slow", "url": agent.url}],
                                           "health": {"interval": "0.3s"},
                                           "shutdown_timeout": "1.5s"})
    with agent.start(), coord.start():
        wait_for(lambda: http_get(coord.url + "/readyz")[0] == 200)
        host, port = urllib.parse.urlsplit(coord.url).netloc.split(":")
        client = socket.create_connection((host, int(port)))
        client.sendall(b"GET /api/download?root=logs&path=huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(1024).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        coord.signal(signal.SIGTERM)
        status, body = wait_for(lambda: (r := get_json(coord.url + "/readyz"))[0] == 503 and r)
        assert "shutting down" in body["reasons"]
        status, _, _ = http_get(coord.url + "/api/download?root=logs&path=small.txt")
        assert status == 503
        assert coord.proc is not None and coord.proc.wait(10) == 0
        assert 1.0 < time.monotonic() - started < 6
        client.close()
