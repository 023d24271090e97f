"""``fleetzip agents`` and ``fleetzip check`` against a real coordinator with real agents."""

from __future__ import annotations

import json
import time

from tests.cli.conftest import AGENT_HOSTS, Fleet, clean_env, run_cli
from tests.support import free_port, http_get


def wait_for_health(url: str, names: dict[str, str], timeout: float = 15) -> None:
    """Until the coordinator reports each agent in *names* with the given health."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, body = http_get(url + "/api/agents", headers={"Authorization": "Bearer t0ken"})
        agents = {a["name"]: a["health"] for a in json.loads(body).get("agents", [])}
        if all(agents.get(n) == h for n, h in names.items()):
            return
        time.sleep(0.1)
    raise AssertionError(f"agents never reached {names}: {agents}")


def test_agents_table_json_and_coordinator_check(fleet: Fleet) -> None:
    token = fleet.tmp / "client.token"
    token.write_text("t0ken\n")
    web1 = fleet.agent("web-1", AGENT_HOSTS[0], {"a.log": b"a"})
    down = f"http://{AGENT_HOSTS[1]}:{free_port(AGENT_HOSTS[1])}"  # nobody listens there
    coordinator = fleet.coordinator([("web-1", web1.url), ("web-2", down)],
                                    token_file=str(token))
    wait_for_health(coordinator.url, {"web-1": "pass", "web-2": "fail"})

    proc = run_cli("agents", "-c", coordinator.url, "--token-file", str(token))
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "URL", "LABELS", "HEALTH"]
    assert len(rows) == 2
    first, second = (row.split() for row in rows)
    assert first[:4] == ["web-1", web1.url, "pos=0", "pass"]
    assert second[:4] == ["web-2", down, "pos=1", "fail"]
    assert "ago" in rows[0]  # last seen, as an age
    assert "0.1.0" in rows[0]  # version

    proc = run_cli("agents", "-c", coordinator.url, "--json",
                   env=clean_env(FLEETZIP_TOKEN="t0ken"))
    assert proc.returncode == 0, proc.stderr
    agents = {a["name"]: a for a in json.loads(proc.stdout)["agents"]}
    assert agents["web-1"]["health"] == "pass" and agents["web-1"]["labels"] == {"pos": "0"}
    assert agents["web-2"]["health"] == "fail" and agents["web-2"]["url"] == down

    proc = run_cli("agents", "-c", coordinator.url)  # no token
    assert proc.returncode == 2
    assert proc.stderr.startswith("fleetzip: error: ") and "401" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not proc.stdout

    proc = run_cli("check", coordinator.url, "-w", "agents=2:")
    assert proc.stdout.startswith("FLEETZIP WARNING - coordinator"), proc.stdout
    assert "'agents'=1;2:;;0" in proc.stdout
    assert proc.returncode == 1
