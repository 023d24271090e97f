"""Listing, health, readiness, info, metrics and the landing page on a real agent."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tests.agent.conftest import AgentFactory, Tree, raw_get
from tests.support import ServerProcess


def get_json(agent: ServerProcess, path: str) -> tuple[int, Any]:
    status, _, body = raw_get(agent.url, path)
    return status, json.loads(body)


def paths(agent: ServerProcess, query: str) -> list[str]:
    status, body = get_json(agent, query)
    assert status == 200, body
    return [entry["path"] for entry in body["entries"]]


def test_list_shapes_and_relative_paths(shared_agent: ServerProcess) -> None:
    status, body = get_json(shared_agent, "/list/logs/sub")
    assert status == 200
    assert (body["node"], body["root"]) == ("n1", "logs")
    entries = {e["path"]: e for e in body["entries"]}
    assert set(entries) == {"sub/b.log", "sub/deep"}  # relative to the root, one level
    assert entries["sub/b.log"] == {
        "path": "sub/b.log",
        "size": 2,
        "type": "file",
        "mtime": entries["sub/b.log"]["mtime"],
    }
    assert entries["sub/deep"]["type"] == "dir"
    assert paths(shared_agent, "/list/logs/sub?recursive=true") == [
        "sub/b.log",
        "sub/deep",
        "sub/deep/c.txt",
    ]
    assert paths(shared_agent, "/list/logs/sub/b.log") == ["sub/b.log"]  # a file: itself


def test_list_globs(shared_agent: ServerProcess) -> None:
    assert paths(shared_agent, "/list/logs?glob=*.log") == ["app.log"]  # * stays in its dir
    assert paths(shared_agent, "/list/logs?glob=**/*.log") == ["app.log", "sub/b.log"]
    assert paths(shared_agent, "/list/logs?glob=sub/**") == ["sub/b.log", "sub/deep/c.txt"]
    assert paths(shared_agent, "/list/logs?glob=*/*/c.t?t") == ["sub/deep/c.txt"]
    assert paths(shared_agent, "/list/logs/sub?glob=*.log") == ["sub/b.log"]  # relative to dir
    assert paths(shared_agent, "/list/logs?glob=%5Ba%5Dpp.log") == ["app.log"]  # [a]pp.log


def test_list_since(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    old = shared_tree.write("old/ancient.log", b"old")
    os.utime(old, (1_000_000_000, 1_000_000_000))  # 2001
    shared_tree.write("old/fresh.log", b"new")
    for since in ("2h", "1500000000", "2020-01-01T00:00:00Z"):
        assert paths(shared_agent, f"/list/logs/old?since={since}") == ["old/fresh.log"]
    assert paths(shared_agent, "/list/logs/old?since=999999000") == [
        "old/ancient.log",
        "old/fresh.log",
    ]


def test_list_bad_parameters_are_400_naming_them(shared_agent: ServerProcess) -> None:
    for query, name in [
        ("glob=%5Babc", "glob"),
        ("glob=a**b", "glob"),
        ("glob=../x", "glob"),
        ("since=yesterday-ish", "since"),
        ("recursive=maybe", "recursive"),
    ]:
        status, body = get_json(shared_agent, f"/list/logs?{query}")
        assert status == 400, query
        assert body["error"]["code"] == "bad_request" and name in body["error"]["message"]
    assert get_json(shared_agent, "/list/nosuch")[0] == 404
    assert get_json(shared_agent, "/list/logs/missing")[0] == 404


def test_health_document(shared_agent: ServerProcess, shared_tree: Tree) -> None:
    for route in ("/health", "/healthz"):
        status, headers, body = raw_get(shared_agent.url, route)
        assert status == 200
        assert headers["Content-Type"] == "application/health+json"
        doc = json.loads(body)
        assert doc["status"] == "pass" and doc["serviceId"] == "n1" and doc["version"]
        roots = doc["checks"]["roots:freeBytes"]
        assert {r["componentId"] for r in roots} == {"logs", "other"}
        assert all(
            r["componentType"] == "datastore"
            and r["observedUnit"] == "bytes"
            and r["observedValue"] > 0
            and r["status"] == "pass"
            for r in roots
        )
        downloads = doc["checks"]["downloads:active"][0]
        assert downloads["observedUnit"] == "downloads" and downloads["status"] == "pass"
        assert doc["checks"]["uptime"][0]["observedUnit"] == "s"
        assert str(shared_tree.base) not in body.decode()  # names only, never paths
    assert get_json(shared_agent, "/livez") == (200, {"status": "alive"})
    assert get_json(shared_agent, "/readyz") == (200, {"status": "ready"})


def test_unreadable_root_fails_readiness(agent_factory: AgentFactory, tree: Tree) -> None:
    agent = agent_factory()
    tree.other.rename(tree.other.with_name("gone"))  # the disk went away
    status, body = get_json(agent, "/readyz")
    assert status == 503 and body["reasons"] == ["root other is not readable"]
    status, _, raw = raw_get(agent.url, "/health")
    doc = json.loads(raw)
    assert status == 503 and doc["status"] == "fail"
    failed = [r for r in doc["checks"]["roots:freeBytes"] if r["status"] == "fail"]
    assert [r["componentId"] for r in failed] == ["other"]
    assert str(tree.base) not in raw.decode()


def test_info_metrics_and_index(shared_agent: ServerProcess) -> None:
    raw_get(shared_agent.url, "/files/logs/app.log")
    raw_get(shared_agent.url, "/files/logs/missing")
    status, info = get_json(shared_agent, "/info")
    assert status == 200
    assert info["node"] == "n1" and info["roots"] == ["logs", "other"]
    assert info["max_concurrent_downloads"] == 32 and info["active_downloads"] == 0
    assert info["bytes_served"] >= len(b"hello from logs\n")
    assert info["uptime_seconds"] > 0 and info["started"].endswith("Z")
    assert set(info) >= {
        "node",
        "version",
        "started",
        "uptime_seconds",
        "roots",
        "labels",
        "active_downloads",
        "max_concurrent_downloads",
        "bytes_served",
    }
    status, headers, body = raw_get(shared_agent.url, "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'fleetzip_agent_http_requests_total{method="GET",route="files",status="200"}' in text
    assert 'fleetzip_agent_http_errors_total{route="files",status="404"}' in text
    assert "fleetzip_agent_active_downloads 0.0" in text
    served = [
        line for line in text.splitlines() if line.startswith("fleetzip_agent_bytes_served_total")
    ]
    assert served and float(served[0].split()[1]) >= 16
    status, index = get_json(shared_agent, "/")
    assert status == 200 and "/files/{root}/{path}" in index["routes"]
    status, body = get_json(shared_agent, "/nope")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_uptime_grows(shared_agent: ServerProcess) -> None:
    first = get_json(shared_agent, "/info")[1]["uptime_seconds"]
    time.sleep(0.05)
    assert get_json(shared_agent, "/info")[1]["uptime_seconds"] > first
