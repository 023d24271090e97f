"""``fleetzip check`` as Icinga runs it: a process against a real agent, one line, exit 0-3."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import trustme

from tests.cli.conftest import AGENT_HOSTS, Fleet, run_cli
from tests.cli.test_check_rules import PERF_RE
from tests.support import ServerProcess, free_port, http_get, write_yaml

LINE_RE = re.compile(r"^FLEETZIP (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+(?: \| (.+))?$")
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def plugin_output(*args: str) -> tuple[str, dict[str, re.Match[str]], int]:
    """(state, perfdata by label, exit code), after checking the one-line plugin format."""
    proc = run_cli("check", *args, timeout=30)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    match = LINE_RE.match(lines[0])
    assert match, lines[0]
    assert "Traceback" not in proc.stderr
    state = match[1]
    assert proc.returncode == EXIT[state], lines[0]
    perf = {}
    for item in (match[2] or "").split():
        item_match = PERF_RE.match(item)
        assert item_match, f"bad perfdata {item!r}"
        perf[item_match["label"]] = item_match
    return state, perf, proc.returncode


def test_ok_warning_critical_against_a_real_agent(fleet: Fleet) -> None:
    agent = fleet.agent("web-1", AGENT_HOSTS[0], {"a.log": b"x" * 10})

    state, perf, _ = plugin_output(agent.url)
    assert state == "OK"
    assert set(perf) == {"time", "free_logs", "downloads"}
    assert int(perf["free_logs"]["value"]) > 0 and perf["free_logs"]["uom"] == "B"
    assert 0 < float(perf["time"]["value"]) < 10 and perf["time"]["uom"] == "s"

    state, perf, _ = plugin_output(agent.url, "-w", "free_logs=1000TB:", "-c", "time=60")
    assert state == "WARNING"
    assert perf["free_logs"]["warn"] == str(1000 * 10**12) + ":"
    assert perf["time"]["crit"] == "60"

    state, _, _ = plugin_output(agent.url + "/healthz", "--critical", "free=1000TB:")
    assert state == "CRITICAL"

    state, perf, _ = plugin_output(agent.url, "-c", "time=@0:")  # once perfdata ';@;'
    assert state == "CRITICAL" and perf["time"]["crit"] == "@0:"

    # An unreadable root: the agent answers 503 with a "fail" document — CRITICAL, exit 2,
    # naming the root (not UNKNOWN for a non-200 answer).
    root = fleet.tmp / "web-1" / "logs"
    root.rename(root.with_name("gone"))
    status, _, body = http_get(agent.url + "/healthz")
    assert status == 503 and json.loads(body)["status"] == "fail"
    state, perf, code = plugin_output(agent.url)
    assert (state, code) == ("CRITICAL", 2)
    assert "time" in perf
    proc = run_cli("check", agent.url)
    assert "logs" in proc.stdout and "fail" in proc.stdout, proc.stdout


def test_full_download_slots_make_the_agent_warn(fleet: Fleet) -> None:
    agent = fleet.agent("web-1", AGENT_HOSTS[0], {"big.bin": b"\0" * (1024 * 1024)},
                        max_concurrent_downloads=1, max_bandwidth="16KiB", chunk_size="4KiB")
    parts = urlsplit(agent.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", "/files/logs/big.bin",
                     headers={"Authorization": "Bearer agent-secret-token"})
        response = conn.getresponse()
        assert response.status == 200
        response.read(4096)  # the download is running and holds the only slot
        state, perf, _ = plugin_output(agent.url)
        assert state == "WARNING"
        assert perf["downloads"]["value"] == "1"
    finally:
        conn.close()


def test_connection_refused_is_critical() -> None:
    port = free_port(AGENT_HOSTS[1])
    proc = run_cli("check", f"http://{AGENT_HOSTS[1]}:{port}")
    assert proc.returncode == 2
    assert proc.stdout.startswith("FLEETZIP CRITICAL - cannot connect to")
    assert "connection refused" in proc.stdout


def test_silent_server_times_out_critical_or_chosen_state() -> None:
    with socket.socket() as server:
        server.bind((AGENT_HOSTS[2], 0))
        server.listen(1)  # accepts the connection in the kernel, never answers
        url = f"http://{AGENT_HOSTS[2]}:{server.getsockname()[1]}"
        started = time.monotonic()
        proc = run_cli("check", url, "--timeout", "1")
        assert time.monotonic() - started < 8
        assert proc.returncode == 2, proc.stdout
        assert proc.stdout.startswith("FLEETZIP CRITICAL - no answer from")
        proc = run_cli("check", url, "--timeout", "500ms:UNKNOWN")
        assert proc.returncode == 3, proc.stdout
        assert proc.stdout.startswith("FLEETZIP UNKNOWN - ")


def test_unknown_for_a_non_health_answer_and_bad_arguments(fleet: Fleet) -> None:
    agent = fleet.agent("web-1", AGENT_HOSTS[0], {"a.log": b"x"})
    state, perf, _ = plugin_output(agent.url + "/nothing-here")
    assert state == "UNKNOWN" and not perf
    for args in (["-w", "speed=3", agent.url], ["-w", "time=abc", agent.url], [],
                 ["--timeout", "soon", agent.url], [agent.url, "--bogus"]):
        proc = run_cli("check", *args)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert LINE_RE.match(proc.stdout.strip()), proc.stdout
        assert proc.stdout.startswith("FLEETZIP UNKNOWN - ")


def test_tls_agent_needs_the_right_ca(fleet: Fleet, tmp_path: Path) -> None:
    ca = trustme.CA()
    host = AGENT_HOSTS[1]
    pem = tmp_path / "agent.pem"
    ca.issue_cert(host).private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    root = tmp_path / "tls-logs"
    root.mkdir()
    url = f"https://{host}:{free_port(host)}"
    config = write_yaml(tmp_path / "tls-agent.yml", {
        "node": "tls-1", "listen": url.split("//")[1], "roots": {"logs": str(root)},
        "tls": {"cert": str(pem), "key": str(pem)}, "log_level": "warning"})
    context = ssl.create_default_context(cafile=str(ca_file))
    with ServerProcess("agent", config, url, tmp_path / "tls.log").start(context=context):
        state, perf, _ = plugin_output(url, "--cacert", str(ca_file))
        assert state == "OK" and "free_logs" in perf
        proc = run_cli("check", url)  # the system CAs do not know this one
        assert proc.returncode == 2 and proc.stdout.startswith("FLEETZIP CRITICAL - TLS error")
        state, _, _ = plugin_output(url, "--insecure")
        assert state == "OK"
