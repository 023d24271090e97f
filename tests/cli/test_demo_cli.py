"""``fleetzip demo``: the whole product on loopback, started and stopped by the CLI itself."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.cli.conftest import CLI, clean_env
from tests.support import http_get

WORKDIR_RE = re.compile(r"agents in (\S+)")


def leftover_processes(workdir: str) -> list[psutil.Process]:
    """Processes whose command line names the demo's directory (its agents, coordinator)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(workdir in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_demo_runs_downloads_and_cleans_up() -> None:
    started = time.monotonic()
    proc = subprocess.run([*CLI, "demo"], capture_output=True, text=True, timeout=110,
                          env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 90
    out = proc.stdout
    workdir = WORKDIR_RE.search(out)
    assert workdir, out
    states = re.findall(r"^(web-1|web-2|db-1)\s+(ok|partial|failed|skipped)\s+(\d+)", out, re.M)
    assert sorted(states) == [("db-1", "ok", "3"), ("web-1", "ok", "3"), ("web-2", "ok", "3")]
    assert "FLEETZIP OK - agent web-1" in out
    for entry in ("web-1/logs/nginx/access.log", "db-1/logs/postgresql/postgresql.log",
                  "_fleetzip/status.json"):
        assert entry in out
    assert "registered" in out and "static" in out
    assert not Path(workdir[1]).exists()
    assert leftover_processes(workdir[1]) == []
    assert "Traceback" not in proc.stderr


def test_demo_serve_keeps_running_until_interrupted() -> None:
    proc = subprocess.Popen([*CLI, "demo", "--serve", "--keep"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "web page at" in line:
                break
        page = re.search(r"web page at (http://127\.0\.0\.\d+:\d+)/", "".join(lines))
        assert page, "".join(lines)
        status, _, _ = http_get(page[1] + "/livez")
        assert status == 200
        status, _, body = http_get(page[1] + "/api/agents")
        assert status == 200 and len(json.loads(body)["agents"]) == 3
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    workdir = WORKDIR_RE.search("".join(lines))
    assert workdir
    kept = Path(workdir[1])
    try:
        assert f"kept {kept}" in rest
        assert list(kept.glob("fleetzip-logs-*.zip")) and (kept / "coordinator.yml").exists()
        assert leftover_processes(str(kept)) == []
    finally:
        shutil.rmtree(kept, ignore_errors=True)
