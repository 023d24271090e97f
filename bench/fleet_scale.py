"""How the coordinator scales with the fleet: 10, 100 and 500 simulated agents.

For each fleet size N this starts ``ceil(N / 125)`` `bench/fleet_sim.py` processes (each
runs up to 125 real agent apps on their own 127.31.x.y addresses), writes an
``agents_file`` (Prometheus file_sd) naming them, starts one real coordinator process
(``python -m coordinator``, fd limit raised) and measures:

* discovery + health: seconds until ``/api/agents`` shows all N agents ``pass``, and the
  coordinator's CPU time per node per health interval in steady state;
* a merged download of one small file from all N nodes: wall time, coordinator CPU time
  (psutil ``cpu_times`` user+system) per node, peak coordinator RSS (sampled every 20 ms);
  the archive is checked (zipfile CRCs, N + 3 entries, every node ``ok``).

Targets: cost grows linearly (per-node CPU at 500 within 2x of the 10-node reference
measured in the same run), ≤ 2 ms coordinator CPU per node, ≤ 150 MiB RSS at 500 nodes.
Writes ``bench/fleet_scale.json`` and the plot ``bench/fleet_scale.png``.

    .venv/bin/python bench/fleet_scale.py [--sizes 10,100,500]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import psutil
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PER_PROCESS = 125
HEALTH_INTERVAL = 2.0
SMALL_FILE = b"one small log line from this node\n" * 30
CPU_TARGET_MS = 2.0
RSS_TARGET_MIB = 150.0


def raise_fd_limit() -> None:
    """In the child before exec: room for thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))


def get_json(url: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


class Sampler(threading.Thread):
    """Peak RSS of one process, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def start_sims(n: int, root: Path, work: Path) -> tuple[list[subprocess.Popen[bytes]], list[dict]]:
    procs, readies = [], []
    for first in range(0, n, PER_PROCESS):
        count = min(PER_PROCESS, n - first)
        ready = work / f"sim-{first}.json"
        readies.append(ready)
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "fleet_sim.py"), "--first", str(first), "--count",
             str(count), "--root", str(root), "--ready", str(ready)],
            stdout=subprocess.DEVNULL, stderr=(work / f"sim-{first}.log").open("wb"),
            preexec_fn=raise_fd_limit))
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in readies):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"fleet_sim did not start; see {work}/sim-*.log")
        time.sleep(0.1)
    nodes = [node for r in readies for node in json.loads(r.read_text())]
    return procs, nodes


def start_coordinator(nodes: list[dict], work: Path) -> tuple[subprocess.Popen[bytes], str]:
    agents_file = work / "agents.yml"
    groups = [{"targets": [n["url"]], "labels": {"node": n["name"], "group": "sim"}}
              for n in nodes]
    agents_file.write_text(yaml.safe_dump(groups))
    import socket

    with socket.socket() as sock:
        sock.bind(("127.30.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "listen": f"127.30.0.1:{port}",
        "agents_file": str(agents_file),
        "health": {"interval": f"{HEALTH_INTERVAL:g}s", "timeout": "5s"},
        "audit_log": str(work / "audit.log"),
        "log_level": "warning",
    }
    path = work / "coordinator.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "coordinator", "--config", str(path)],
                            cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=(work / "coordinator.log").open("wb"),
                            preexec_fn=raise_fd_limit)
    url = f"http://127.30.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            get_json(url + "/livez", timeout=1)
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                log = work / "coordinator.log"
                raise RuntimeError(f"coordinator did not start; see {log}") from None
            time.sleep(0.05)


def wait_all_healthy(url: str, n: int, timeout: float = 120) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        agents = get_json(url + "/api/agents")["agents"]
        if len(agents) == n and all(a["health"] == "pass" for a in agents):
            return time.monotonic() - began
        time.sleep(0.1)
    healthy = sum(a["health"] == "pass" for a in agents)
    raise RuntimeError(f"only {healthy} of {n} agents healthy after {timeout}s")


def merged_download(url: str, n: int, dest: Path) -> float:
    began = time.monotonic()
    query = "root=logs&path=small.log"
    with urllib.request.urlopen(f"{url}/api/download?{query}", timeout=300) as response, \
            dest.open("wb") as out:
        while piece := response.read(256 * 1024):
            out.write(piece)
    seconds = time.monotonic() - began
    with zipfile.ZipFile(dest) as archive:
        assert archive.testzip() is None, "bad CRC"
        names = archive.namelist()
        assert len(names) == n + 3, f"{len(names)} entries for {n} nodes"
        status = json.loads(archive.read("_fleetzip/status.json"))
        states = {node["state"] for node in status["nodes"]}
        assert states == {"ok"}, states
    return seconds


def measure(n: int, work: Path) -> dict[str, float]:
    root = work / "root"
    root.mkdir(parents=True, exist_ok=True)
    (root / "small.log").write_bytes(SMALL_FILE)
    sims, nodes = start_sims(n, root, work)
    coordinator = None
    try:
        coordinator, url = start_coordinator(nodes, work)
        pid = coordinator.pid
        to_healthy = wait_all_healthy(url, n)
        cpu_a = cpu_seconds(pid)
        window = 3 * HEALTH_INTERVAL
        time.sleep(window)
        poll_cpu = (cpu_seconds(pid) - cpu_a) / (window / HEALTH_INTERVAL) / n
        sampler = Sampler(pid)
        sampler.start()
        cpu_b = cpu_seconds(pid)
        seconds = merged_download(url, n, work / "all.zip")
        download_cpu = (cpu_seconds(pid) - cpu_b) / n
        sampler.done.set()
        sampler.join()
        return {"nodes": n, "seconds_to_all_healthy": to_healthy,
                "health_cpu_ms_per_node_per_interval": poll_cpu * 1000,
                "download_seconds": seconds, "download_cpu_ms_per_node": download_cpu * 1000,
                "peak_rss_mib": sampler.peak / 2**20,
                "sim_processes": math.ceil(n / PER_PROCESS)}
    finally:
        for proc in ([coordinator] if coordinator else []) + sims:
            proc.terminate()
        for proc in ([coordinator] if coordinator else []) + sims:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def plot(results: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [r["nodes"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(nodes, [r["download_seconds"] for r in results], "o-",
              label="merged download, wall time (s)")
    left.plot(nodes, [r["download_cpu_ms_per_node"] * r["nodes"] / 1000 for r in results], "s-",
              label="coordinator CPU for the download (s)")
    left.plot(nodes, [r["seconds_to_all_healthy"] for r in results], "^-",
              label="discovery: all agents healthy (s)")
    left.plot(nodes, [CPU_TARGET_MS * n / 1000 for n in nodes], ":", color="gray",
              label=f"CPU target {CPU_TARGET_MS:g} ms/node")
    left.set_xlabel("nodes")
    left.set_ylabel("seconds")
    left.set_title("time")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot(nodes, [r["peak_rss_mib"] for r in results], "o-", color="tab:red",
               label="coordinator peak RSS")
    right.axhline(RSS_TARGET_MIB, linestyle=":", color="gray",
                  label=f"target {RSS_TARGET_MIB:g} MiB at 500")
    right.set_xlabel("nodes")
    right.set_ylabel("MiB")
    right.set_ylim(bottom=0)
    right.set_title("memory")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle("fleetzip coordinator: one small file from every node")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--out", type=Path, default=HERE / "fleet_scale.json")
    parser.add_argument("--png", type=Path, default=HERE / "fleet_scale.png")
    args = parser.parse_args(argv)
    raise_fd_limit()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"fleet{n}-") as tmp:
            result = measure(n, Path(tmp))
        results.append(result)
        print(json.dumps(result), flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.png)
    ref = results[0]
    print(f"\n{'nodes':>6} {'healthy s':>10} {'poll ms/node':>13} {'dl s':>7} "
          f"{'dl CPU ms/node':>15} {'vs ref':>7} {'peak RSS MiB':>13}")
    for r in results:
        ratio = r["download_cpu_ms_per_node"] / ref["download_cpu_ms_per_node"]
        print(f"{r['nodes']:>6} {r['seconds_to_all_healthy']:>10.2f} "
              f"{r['health_cpu_ms_per_node_per_interval']:>13.3f} {r['download_seconds']:>7.2f} "
              f"{r['download_cpu_ms_per_node']:>15.3f} {ratio:>6.2f}x {r['peak_rss_mib']:>13.1f}")
    last = results[-1]
    ok = (last["download_cpu_ms_per_node"] <= CPU_TARGET_MS
          and last["peak_rss_mib"] <= RSS_TARGET_MIB)
    print(f"\ntargets (≤ {CPU_TARGET_MS} ms CPU/node, ≤ {RSS_TARGET_MIB:g} MiB at "
          f"{last['nodes']}): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
