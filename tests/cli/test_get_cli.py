"""``fleetzip get`` as a process against a real coordinator and real agents.

What an operator sees: exit codes (0 all ok, 1 a node failed, 2 auth/connection/HTTP), a
valid zip (``zipfile`` and ``unzip -t``) under the final name only when complete, the
per-node table or the JSON summary, and one error line — never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT_HOSTS, CLI, Fleet, clean_env, run_cli
from tests.support import ServerProcess, free_port, require_tool

FILES = {
    "web-1": {"app.log": b"web-1 app line\n" * 200, "nginx/access.log": os.urandom(50_000)},
    "web-2": {"app.log": b"web-2 says hello\n" * 50},
}


def start(fleet: Fleet, *, down: bool = False, slow: bool = False) -> tuple[ServerProcess, Path]:
    """web-1 and web-2 (or a dead web-2 address) behind a coordinator with a client token."""
    token = fleet.tmp / "client.token"
    token.write_text("# the client token\nclient-t0ken\n")
    extra = {"max_bandwidth": "64KiB", "chunk_size": "8KiB"} if slow else {}
    files = {"big.bin": os.urandom(2 * 1024 * 1024)} if slow else FILES["web-1"]
    web1 = fleet.agent("web-1", AGENT_HOSTS[0], files, **extra)
    if down:
        web2_url = f"http://{AGENT_HOSTS[1]}:{free_port(AGENT_HOSTS[1])}"
    else:
        web2_url = fleet.agent("web-2", AGENT_HOSTS[1], FILES["web-2"]).url
    coordinator = fleet.coordinator([("web-1", web1.url), ("web-2", web2_url)],
                                    token_file=str(token))
    return coordinator, token


def out_dir(fleet: Fleet) -> Path:
    path = fleet.tmp / "out"
    path.mkdir(exist_ok=True)
    return path


def test_all_nodes_ok_gives_a_valid_zip_and_exit_0(fleet: Fleet) -> None:
    coordinator, token = start(fleet)
    out = out_dir(fleet)
    proc = run_cli("get", "-c", coordinator.url, "--root", "logs", "--token-file", str(token),
                   "--progress", cwd=out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zips = list(out.iterdir())
    assert len(zips) == 1 and zips[0].suffix == ".zip", zips  # no .part file left
    with zipfile.ZipFile(zips[0]) as zf:
        assert zf.testzip() is None
        for node, files in FILES.items():
            for name, data in files.items():
                assert zf.read(f"{node}/logs/{name}") == data
        assert "_fleetzip/status.json" in zf.namelist()
    unzip = subprocess.run([require_tool("unzip"), "-t", str(zips[0])],
                           capture_output=True, text=True)
    assert unzip.returncode == 0 and "No errors detected" in unzip.stdout, unzip.stdout
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert rows["web-1"][1:3] == ["ok", "2"] and rows["web-2"][1:3] == ["ok", "1"]
    assert proc.stdout.splitlines()[1].split() == ["NODE", "STATE", "FILES", "BYTES", "ERROR"]
    assert "B/s" in proc.stderr or "100%" in proc.stderr  # the forced tqdm bar


def test_json_summary_and_output_file(fleet: Fleet) -> None:
    coordinator, _ = start(fleet)
    target = out_dir(fleet) / "mine.zip"
    env = clean_env(FLEETZIP_TOKEN="client-t0ken")
    proc = run_cli("get", "-c", coordinator.url, "--root", "logs", "--glob", "*.log",
                   "--nodes", "web-1", "-o", str(target), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["file"] == str(target) and summary["bytes"] == target.stat().st_size
    assert summary["exit_code"] == 0
    assert [(n["node"], n["state"], n["files"]) for n in summary["nodes"]] == [("web-1", "ok", 1)]
    assert summary["nodes"][0]["bytes"] == len(FILES["web-1"]["app.log"])
    with zipfile.ZipFile(target) as zf:
        assert [n for n in zf.namelist() if not n.startswith("_fleetzip/")] == [
            "web-1/logs/app.log"]


def test_one_node_down_exits_1_and_keeps_a_valid_zip(fleet: Fleet) -> None:
    coordinator, token = start(fleet, down=True)
    out = out_dir(fleet)
    proc = run_cli("get", "-c", coordinator.url, "--root", "logs", "--token-file", str(token),
                   "-o", f"{out}/")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert rows["web-1"][1] == "ok"
    assert rows["web-2"][1] in ("failed", "partial")
    (archive,) = out.iterdir()
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        assert zf.read("web-1/logs/app.log") == FILES["web-1"]["app.log"]
        assert not any(n.startswith("web-2/") for n in zf.namelist())


def test_bad_token_and_unreachable_coordinator_exit_2_with_one_line(fleet: Fleet) -> None:
    coordinator, _ = start(fleet)
    out = out_dir(fleet)
    bad = fleet.tmp / "bad.token"
    bad.write_text("wrong\n")
    cases = {
        "401": ["-c", coordinator.url, "--token-file", str(bad)],
        "connection refused": ["-c", f"http://{AGENT_HOSTS[2]}:{free_port(AGENT_HOSTS[2])}"],
        "cannot read token file": ["-c", coordinator.url, "--token-file", str(fleet.tmp / "no")],
        "answered 400: nodes": ["-c", coordinator.url, "--nodes", "web-9",
                                "--token-file", str(fleet.tmp / "client.token")],
        "answered 404: no node matches": ["-c", coordinator.url, "--labels", "pos=9",
                                          "--token-file", str(fleet.tmp / "client.token")],
    }
    for expected, args in cases.items():
        proc = run_cli("get", *args, "--root", "logs", cwd=out)
        assert proc.returncode == 2, (expected, proc.stderr)
        assert proc.stderr.startswith("fleetzip: error: ") and proc.stderr.count("\n") == 1
        assert expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not proc.stdout
        assert list(out.iterdir()) == []
    proc = run_cli("get", "-c", coordinator.url)  # usage: --root missing
    assert proc.returncode == 2 and "--root" in proc.stderr


def _start_slow_get(coordinator: ServerProcess, token: Path, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*CLI, "get", "-c", coordinator.url, "--root", "logs", "--token-file", str(token),
         "-o", str(out / "slow.zip")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        parts = [p for p in out.iterdir() if p.name.endswith(".part")]
        if parts and parts[0].stat().st_size > 8 * 1024:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the download never started")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_client_leaves_no_file(fleet: Fleet, signum: int) -> None:
    coordinator, token = start(fleet, slow=True)
    out = out_dir(fleet)
    proc = _start_slow_get(coordinator, token, out)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "fleetzip: interrupted"
    assert list(out.iterdir()) == []


def test_coordinator_killed_mid_download_leaves_no_file(fleet: Fleet) -> None:
    coordinator, token = start(fleet, slow=True)
    out = out_dir(fleet)
    proc = _start_slow_get(coordinator, token, out)
    os.kill(coordinator.pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 2, stderr
    assert "ended early" in stderr and "promised by Content-Length" in stderr, stderr
    assert stderr.startswith("fleetzip: error: ") and stderr.count("\n") == 1
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []


def test_nothing_delivered_exits_1(fleet: Fleet) -> None:
    """Every node skipped (no such root anywhere): a valid but empty archive, exit 1."""
    coordinator, token = start(fleet)
    out = out_dir(fleet)
    proc = run_cli("get", "-c", coordinator.url, "--root", "nope", "--token-file", str(token),
                   "-o", str(out / "empty.zip"))
    if proc.returncode == 2:  # the coordinator refused the root up front: also fine
        assert "nope" in proc.stderr and list(out.iterdir()) == []
        return
    assert proc.returncode == 1, proc.stdout + proc.stderr
    states = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[2:]}
    assert states == {"web-1": "skipped", "web-2": "skipped"}


def test_basic_auth_user_from_env_and_deflate_without_content_length(fleet: Fleet) -> None:
    from coordinator.users import hash_password

    users = fleet.tmp / "users"
    users.write_text(f"alice:{hash_password('s3cret pass', iterations=1000)}\n")
    web1 = fleet.agent("web-1", AGENT_HOSTS[0], FILES["web-1"])
    coordinator = fleet.coordinator([("web-1", web1.url)], users_file=str(users))
    out = out_dir(fleet)
    args = ["get", "-c", coordinator.url, "--root", "logs", "--user", "alice", "-o", f"{out}/"]

    proc = run_cli(*args, "--compression", "deflate",
                   env=clean_env(FLEETZIP_PASSWORD="s3cret pass"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no TTY, no --progress: no bar
    (archive,) = out.iterdir()
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("web-1/logs/app.log")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert zf.read(info) == FILES["web-1"]["app.log"]
    archive.unlink()

    proc = run_cli(*args, env=clean_env(FLEETZIP_PASSWORD="wrong"))
    assert proc.returncode == 2 and "401" in proc.stderr
    proc = run_cli(*args, env=clean_env())  # no password and no terminal to ask on
    assert proc.returncode == 2 and "FLEETZIP_PASSWORD" in proc.stderr
    assert list(out.iterdir()) == []
