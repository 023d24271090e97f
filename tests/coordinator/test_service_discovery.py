"""Discovery, registration, auth, reload and lifecycle of a real coordinator process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from coordinator.users import hash_password
from tests.coordinator.service_fleet import (
    AGENT_TOKEN,
    CLIENT_TOKEN,
    PASSWORD,
    USER,
    agents_by_name,
    basic,
    bearer,
    coordinator_process,
    get_json,
    wait_for,
)
from tests.support import http_get, write_yaml


def request(url: str, method: str, body: object | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_inline_and_file_sd_with_change_and_bad_file(tmp_path: Path) -> None:
    sd = write_yaml(tmp_path / "agents.yml", [
        {"targets": ["127.0.0.9:8701"], "labels": {"node": "f1", "env": "prod"}},
    ])
    coord = coordinator_process(tmp_path, {
        "agents": [{"name": "s1", "url": "http://127.0.0.8:8701/", "labels": {"a": "b"}}],
        "agents_file": str(sd), "agents_file_interval": "0.2s",
        "health": {"interval": "0.5s", "timeout": "0.3s"},
    })
    with coord.start():
        agents = agents_by_name(coord.url)
        assert set(agents) == {"s1", "f1"}
        assert agents["s1"]["source"] == "static" and agents["s1"]["url"].endswith(":8701")
        assert agents["f1"] | {"health": None, "error": None} == {
            "name": "f1", "url": "http://127.0.0.9:8701", "labels": {"env": "prod"},
            "source": "file", "health": None, "last_seen": None, "version": None,
            "error": None, "features": []}
        # nothing listens there: the poller marks them down with a reason
        down = wait_for(lambda: (a := agents_by_name(coord.url))["f1"]["health"] == "fail"
                        and a)
        assert "refused" in down["f1"]["error"]

        write_yaml(sd, [{"targets": ["127.0.0.10:8701", "127.0.0.11:8701"]}])
        wait_for(lambda: set(agents_by_name(coord.url)) == {"s1", "127.0.0.10", "127.0.0.11"})

        sd.write_text("- targets: [unclosed\n")
        time.sleep(0.8)
        assert set(agents_by_name(coord.url)) == {"s1", "127.0.0.10", "127.0.0.11"}
        assert "keeping the last good list" in coord.output()
        status, _, body = http_get(coord.url + "/health")
        assert json.loads(body)["checks"]["discovery:agentsFile"][0]["status"] == "warn"

        status, sd_body = get_json(coord.url + "/api/sd")
        assert status == 200
        by_node = {g["labels"]["node"]: g for g in sd_body}
        assert by_node["s1"] == {"targets": ["127.0.0.8:8701"], "labels": {
            "__scheme__": "http", "node": "s1", "fleetzip_source": "static", "a": "b"}}
        assert by_node["127.0.0.10"]["targets"] == ["127.0.0.10:8701"]
    assert coord.proc is not None and coord.proc.returncode == 0


R1_TOKEN = "r1-registration-token-0001"


def test_registration_ttl_and_delete(tmp_path: Path) -> None:
    token_file = tmp_path / "agent-token"
    token_file.write_text(AGENT_TOKEN + "\n")
    node_tokens = tmp_path / "registration-tokens"
    node_tokens.write_text(f"# name token\nr1 {R1_TOKEN}\n")
    coord = coordinator_process(tmp_path, {
        "agent_token_file": str(token_file),
        "registration": {"ttl": "1s", "tokens_file": str(node_tokens)},
        "health": {"interval": "5s", "timeout": "0.3s"},
    })
    register = coord_url = None
    with coord.start():
        coord_url = coord.url
        register = coord_url + "/api/agents/register"
        body = {"name": "r1", "url": "http://127.0.0.20:8701", "labels": {"role": "db"},
                "version": "9.9"}
        assert request(register, "POST", body)[0] == 401
        assert request(register, "POST", body, bearer("wrong"))[0] == 401
        # the token the coordinator sends to agents is no registration credential
        assert request(register, "POST", body, bearer(AGENT_TOKEN))[0] == 401
        status, answer = request(register, "POST", body, bearer(R1_TOKEN))
        assert (status, answer) == (200, {"ttl": 1.0})
        r1 = agents_by_name(coord_url)["r1"]
        assert r1["source"] == "registered" and r1["labels"] == {"role": "db"}
        assert r1["version"] == "9.9" and r1["last_seen"] is not None

        status, error = request(register, "POST", {**body, "name": "../x"}, bearer(R1_TOKEN))
        assert status == 400 and "name:" in error["error"]["message"]  # type: ignore[index]
        status, error = request(register, "POST", {**body, "url": "file:///x"},
                                bearer(R1_TOKEN))
        assert status == 400 and "url:" in error["error"]["message"]  # type: ignore[index]

        # heartbeats keep it; silence expires it
        for _ in range(3):
            time.sleep(0.5)
            assert request(register, "POST", body, bearer(R1_TOKEN))[0] == 200
        assert "r1" in agents_by_name(coord_url)
        time.sleep(1.3)
        assert "r1" not in agents_by_name(coord_url)

        assert request(register, "POST", body, bearer(R1_TOKEN))[0] == 200
        delete = coord_url + "/api/agents/r1"
        assert request(delete, "DELETE", None, bearer("wrong"))[0] == 401
        assert request(delete, "DELETE", None, bearer(R1_TOKEN))[0] == 200
        assert "r1" not in agents_by_name(coord_url)
        assert request(delete, "DELETE", None, bearer(R1_TOKEN))[0] == 404


def test_client_auth_bearer_and_basic_and_sighup_reload(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(CLIENT_TOKEN + "\n")
    users = tmp_path / "users"
    users.write_text(f"{USER}:{hash_password(PASSWORD, iterations=1000)}\n")
    coord = coordinator_process(tmp_path, {"token_file": str(tokens),
                                           "users_file": str(users)})
    with coord.start():
        url = coord.url + "/api/agents"
        status, headers, body = http_get(url)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        challenge = {k.lower(): v for k, v in headers.items()}["www-authenticate"]
        assert challenge.startswith('Basic realm="fleetzip"') and "Bearer" in challenge
        assert http_get(url, bearer(CLIENT_TOKEN))[0] == 200
        assert http_get(url, bearer("nope"))[0] == 401
        assert http_get(url, basic(USER, PASSWORD))[0] == 200
        assert http_get(url, basic(USER, "wrong"))[0] == 401
        assert http_get(url, basic("mallory", PASSWORD))[0] == 401
        for open_route in ("/livez", "/readyz", "/health"):
            assert http_get(coord.url + open_route)[0] in (200, 503)
        assert http_get(coord.url + "/metrics")[0] == 401
        for page in ("/", "/static/app.js"):
            assert http_get(coord.url + page)[0] == 401
            assert http_get(coord.url + page, basic(USER, PASSWORD))[0] == 200

        # SIGHUP: new token and user take effect; a broken users file keeps the old users
        tokens.write_text("rotated-token\n")
        users.write_text(f"bob:{hash_password('pw2', iterations=1000)}\n")
        coord.signal(signal.SIGHUP)
        wait_for(lambda: http_get(url, bearer("rotated-token"))[0] == 200)
        assert http_get(url, bearer(CLIENT_TOKEN))[0] == 401
        assert http_get(url, basic("bob", "pw2"))[0] == 200
        assert http_get(url, basic(USER, PASSWORD))[0] == 401
        users.write_text("bob:not-a-hash\n")
        coord.signal(signal.SIGHUP)
        wait_for(lambda: "keeping the previous users" in coord.output())
        assert http_get(url, basic("bob", "pw2"))[0] == 200
        metrics = http_get(coord.url + "/metrics", bearer("rotated-token"))[2].decode()
        assert 'fleetzip_coordinator_http_requests_total{method="GET",route="agents",' \
               'status="200"}' in metrics
        assert "fleetzip_coordinator_agents_known 0.0" in metrics


def run_coordinator(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator", "--config", str(config)],
                          capture_output=True, text=True, timeout=20)


def test_config_errors_exit_2_naming_file_and_key(tmp_path: Path) -> None:
    cases = {
        "unknown.yml": ({"listen": "127.0.0.1:1", "bogus": 1}, "bogus"),
        "type.yml": ({"health": {"interval": "soon"}}, "health.interval"),
        "name.yml": ({"agents": [{"name": "bad name", "url": "http://x:1"}]}, "agents[0].name"),
        "tokens.yml": ({"token_file": str(tmp_path / "missing")}, "token_file"),
    }
    bad_users = tmp_path / "users"
    bad_users.write_text("alice:plain\n")
    cases["users.yml"] = ({"users_file": str(bad_users)}, "users_file")
    bad_sd = tmp_path / "sd.yml"
    bad_sd.write_text("{not: a list}\n")
    cases["sd.yml"] = ({"agents_file": str(bad_sd)}, "agents_file")
    for name, (config, key) in cases.items():
        done = run_coordinator(write_yaml(tmp_path / name, config))
        assert done.returncode == 2, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert key in lines[0], (key, lines[0])
        assert name in lines[0] or str(tmp_path) in lines[0]


def test_sigterm_fails_readiness_and_exits_0(tmp_path: Path) -> None:
    coord = coordinator_process(tmp_path, {"shutdown_timeout": "2s",
                                           "health": {"interval": "0.2s"}})
    coord.start()
    try:
        wait_for(lambda: http_get(coord.url + "/readyz")[0] == 200)
        _status, body = get_json(coord.url + "/readyz")
        assert body == {"status": "ready", "agents_healthy": 0, "agents_total": 0}
        coord.signal(signal.SIGTERM)
        assert coord.proc is not None
        assert coord.proc.wait(10) == 0
    finally:
        coord.stop()
