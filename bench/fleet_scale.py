"""How the coordinator scales with the fleet: 10, 100 and 500 simulated agents.

For each fleet size N this starts ``ceil(N / 125)`` `bench/fleet_sim.py` processes (each
runs up to 125 real agent apps on their own 127.31.x.y addresses) and two real coordinator
processes (``python -m coordinator``, fd limit raised) one after the other:

1. **health** coordinator (``health.interval`` 1 s, 2 s from 500 nodes; agents_file checked
   every 0.25 s). It starts with an empty ``agents_file``, so interpreter start-up and
   imports are behind us before anything is measured. Then:

   * *discovery cycle*: the full agents_file is written; measured is the coordinator's CPU
     from that moment until ``/readyz`` counts all N agents healthy (file re-read, one
     health round of ``/readyz`` + ``/info`` to every agent), then the file is emptied
     again and a health interval passes (not measured). The coordinator's idle CPU
     (agents_file checks, our ``/readyz`` polls at the same rate), measured before any
     agent is known, is subtracted.
   * *health round*: with all N agents known, the CPU over a window of whole health
     intervals, divided by the rounds in it (the poller keeps a fixed cadence and warns in
     its log when a round overruns the interval; an overrun makes the run fail).

2. **download** coordinator (``health.interval`` 1 h: only its first round at start, so no
   health round runs during the downloads), agents_file complete from the start:

   * *plan*: ``GET /api/plan?root=logs&path=small.log`` (a ``/list`` per node);
   * *download*: ``GET /api/download`` of the same selection (plan + one ``GET`` per node +
     the zip); every archive is checked (zipfile CRCs, N + 3 entries, every node ``ok``).

CPU is psutil ``cpu_times`` user+system of the coordinator process, read before and after.
Those are whole 10 ms clock ticks, so every figure is the median of several *batches*, a
batch being as many repetitions as make at least ~200 node-operations (20 downloads at 10
nodes, 1 at 500): the tick error is then ≤ 5 % of a batch.

The headline ("coordinator CPU per node") is discovery cycle + download (which includes
its plan), per node. Targets: ≤ 2 ms per node at 500 nodes, cost linear (per-node CPU at
500 within 2x of the 10-node figure of the same run), ≤ 150 MiB peak RSS at 500 nodes.
Writes ``bench/fleet_scale.json`` and the plot ``bench/fleet_scale.png``.

    .venv/bin/python bench/fleet_scale.py [--sizes 10,100,500] [--profile DIR]

``--profile DIR`` also runs ``py-spy record --nonblocking`` on the coordinator during the
health rounds and during the downloads (``DIR/fleet<N>-<phase>.txt``, collapsed stacks) and
prints the functions with the most samples; CPU figures of a profiled run are perturbed.

``--compare TREE`` is an interleaved A/B of the download phase instead: one fleet per size,
two download coordinators — this checkout's and TREE's (another checkout, e.g. ``git
worktree add /tmp/before <commit>``) — asked in turn, ``--rounds`` times, the order swapped
every round. It prints each one's median download and plan CPU per node and the median of
the per-round ratios. Between two runs of the full bench the same code moves by up to 40 %
on the shared box; inside one interleaved run a 5 % change shows.

    .venv/bin/python bench/fleet_scale.py --sizes 500 --compare /tmp/before --rounds 15
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PER_PROCESS = 125
SMALL_FILE = b"one small log line from this node\n" * 30
SELECTION = "root=logs&path=small.log"
CPU_TARGET_MS = 2.0
RSS_TARGET_MIB = 150.0
LINEAR_LIMIT = 2.0  # per-node CPU at the largest size / at the smallest
BATCH_NODE_OPS = 200  # node-operations per batch: keeps 10 ms ticks ≤ 5 % of a batch
DISCOVERY_NODE_OPS = 100  # discovery cycles and health rounds are slower to repeat
BATCHES = 5  # download batches per size (plan and discovery: 3)
ROUND_WINDOWS = 3  # steady-state windows of health rounds per size
FILE_CHECK_INTERVAL = 0.25  # agents_file_interval of the health coordinator
POLL_STEP = 0.05  # how often we ask /readyz while waiting
OVERRUN_MARK = "longer than health.interval"  # healthpoll's overrun warning


def health_interval(n: int) -> float:
    """1 s (more rounds per minute for small fleets), 2 s from 500 nodes."""
    return 1.0 if n < 500 else 2.0


def raise_fd_limit() -> None:
    """In the child before exec: room for thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))


def get_json(url: str, timeout: float = 30) -> Any:
    """The JSON body of *url*, also for error statuses (``/readyz`` answers 503)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def batch_size(n: int) -> int:
    return max(1, math.ceil(BATCH_NODE_OPS / n))


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

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak / 2**20


class Coordinator:
    """One coordinator process; ``cpu()`` is its user+system CPU seconds so far."""

    def __init__(self, work: Path, agents_file: Path, interval: float, tag: str,
                 repo: Path = REPO) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.30.0.1", 0))
            port = sock.getsockname()[1]
        config = {
            "listen": f"127.30.0.1:{port}",
            "agents_file": str(agents_file),
            "agents_file_interval": f"{FILE_CHECK_INTERVAL:g}s",
            "health": {"interval": f"{interval:g}s", "timeout": "5s"},
            "audit_log": str(work / f"audit-{tag}.log"),
            "log_level": "warning",
        }
        path = work / f"coordinator-{tag}.yml"
        path.write_text(yaml.safe_dump(config))
        self.log = work / f"coordinator-{tag}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "--config", str(path)], cwd=repo,
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), preexec_fn=raise_fd_limit)
        self.url = f"http://127.30.0.1:{port}"
        self.process = psutil.Process(self.proc.pid)
        self._wait_up()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_json(self.url + "/livez", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"coordinator did not start; see {self.log}") from None
                time.sleep(0.05)

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def readyz(self) -> dict[str, Any]:
        body: dict[str, Any] = get_json(self.url + "/readyz")
        return body

    def wait_for(self, test: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = 180) -> float:
        """Seconds until *test* holds for the ``/readyz`` body (asked every 50 ms)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            body = self.readyz()
            if test(body):
                return time.monotonic() - began
            time.sleep(POLL_STEP)
        raise RuntimeError(f"{what} not reached after {timeout}s: {body}")

    def overruns(self) -> int:
        return self.log.read_text(errors="replace").count(OVERRUN_MARK)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def profiled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy (collapsed stacks) on *pid* while the block runs, when *out* is given."""
    if out is None:
        yield
        return
    spy = subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "--rate",
         "250", "--format", "raw", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def summarise_profile(path: Path, top: int = 25) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) of a collapsed-stack file, most inclusive first
    among the functions in this repository plus the hottest leaf functions anywhere."""
    own: collections.Counter[str] = collections.Counter()
    total_incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  if " (" in f else f for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            total_incl[frame] += count
    rows = [(name, 100 * own[name] / total, 100 * total_incl[name] / total)
            for name, _ in own.most_common(top)]
    return rows


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


def write_agents_file(path: Path, nodes: list[dict]) -> None:
    """file_sd, one group per node; replaced atomically (a new inode: the watch sees it)."""
    groups = [{"targets": [n["url"]], "labels": {"node": n["name"], "group": "sim"}}
              for n in nodes]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(groups))
    tmp.replace(path)


# -- phase 1: discovery and health rounds ---------------------------------------------------


def idle_rate(coordinator: Coordinator, seconds: float, polling: bool) -> float:
    """CPU seconds per second of an idle coordinator (asking /readyz like wait_for does)."""
    began, cpu = time.monotonic(), coordinator.cpu()
    while time.monotonic() - began < seconds:
        if polling:
            coordinator.readyz()
        time.sleep(POLL_STEP)
    return (coordinator.cpu() - cpu) / (time.monotonic() - began)


def discovery_cycle(coordinator: Coordinator, agents_file: Path, nodes: list[dict],
                    idle: float, interval: float) -> tuple[float, float]:
    """(CPU seconds, wall seconds) from writing the full agents_file to all N healthy."""
    n = len(nodes)
    cpu = coordinator.cpu()
    write_agents_file(agents_file, nodes)
    wall = coordinator.wait_for(lambda b: b.get("agents_healthy") == n, f"{n} healthy")
    spent = coordinator.cpu() - cpu - idle * wall
    write_agents_file(agents_file, [])
    coordinator.wait_for(lambda b: b.get("agents_total") == 0, "no agents")
    time.sleep(interval)  # a round still asking the removed agents ends (discarded)
    return spent, wall


def health_phase(n: int, nodes: list[dict], work: Path,
                 profile: Path | None) -> dict[str, Any]:
    agents_file = work / "agents-health.yml"
    write_agents_file(agents_file, [])
    interval = health_interval(n)
    coordinator = Coordinator(work, agents_file, interval, "health")
    sampler = Sampler(coordinator.proc.pid)
    sampler.start()
    try:
        coordinator.wait_for(lambda b: b.get("status") == "ready", "ready")
        time.sleep(1.0)
        idle_polling = idle_rate(coordinator, 3.0, polling=True)
        idle_quiet = idle_rate(coordinator, 3.0, polling=False)
        per_batch = max(1, math.ceil(DISCOVERY_NODE_OPS / n))
        batches, walls = [], []
        for _ in range(3):
            spent = 0.0
            for _ in range(per_batch):
                cpu, wall = discovery_cycle(coordinator, agents_file, nodes, idle_polling,
                                            interval)
                spent += cpu
                walls.append(wall)
            batches.append(spent / per_batch)
        write_agents_file(agents_file, nodes)
        coordinator.wait_for(lambda b: b.get("agents_healthy") == n, f"{n} healthy")
        rounds = max(3, math.ceil(DISCOVERY_NODE_OPS / n))
        windows = []
        with profiled(coordinator.proc.pid, profile and profile / f"fleet{n}-health.txt"):
            for _ in range(ROUND_WINDOWS):
                cpu = coordinator.cpu()
                time.sleep(rounds * interval)
                windows.append((coordinator.cpu() - cpu - idle_quiet * rounds * interval)
                               / rounds)
        overruns = coordinator.overruns()
    finally:
        coordinator.stop()
        peak = sampler.stop()
    return {
        "health_interval_s": interval,
        "discovery_cycles": 3 * per_batch,
        "discovery_cpu_ms_per_node": statistics.median(batches) * 1000 / n,
        "seconds_to_all_healthy": statistics.median(walls),
        "seconds_to_all_healthy_max": max(walls),
        "health_rounds_measured": ROUND_WINDOWS * rounds,
        "health_round_cpu_ms_per_node": statistics.median(windows) * 1000 / n,
        "health_round_overruns": overruns,
        "idle_cpu_ms_per_s": idle_quiet * 1000,
        "idle_cpu_ms_per_s_polling": idle_polling * 1000,
        "health_peak_rss_mib": peak,
    }


# -- phase 2: plan and merged download ------------------------------------------------------


def plan_once(url: str, n: int) -> None:
    plan = get_json(f"{url}/api/plan?{SELECTION}", timeout=300)
    assert len(plan["nodes"]) == n and plan["files"] == n, (len(plan["nodes"]), plan["skipped"])


def download_once(url: str, n: int, dest: Path) -> None:
    with urllib.request.urlopen(f"{url}/api/download?{SELECTION}", timeout=300) as response, \
            dest.open("wb") as out:
        shutil.copyfileobj(response, out, 256 * 1024)
    with zipfile.ZipFile(dest) as archive:
        assert archive.testzip() is None, "bad CRC"
        names = archive.namelist()
        assert len(names) == n + 3, f"{len(names)} entries for {n} nodes"
        status = json.loads(archive.read("_fleetzip/status.json"))
        states = {node["state"] for node in status["nodes"]}
        assert states == {"ok"}, states


def timed_batches(coordinator: Coordinator, action: Callable[[], None], batches: int,
                  per_batch: int) -> tuple[list[float], list[float]]:
    """(CPU seconds per action, wall seconds per action) of each batch."""
    cpus, walls = [], []
    for _ in range(batches):
        cpu, began = coordinator.cpu(), time.monotonic()
        for _ in range(per_batch):
            action()
        walls.append((time.monotonic() - began) / per_batch)
        cpus.append((coordinator.cpu() - cpu) / per_batch)
    return cpus, walls


def download_phase(n: int, nodes: list[dict], work: Path,
                   profile: Path | None) -> dict[str, Any]:
    agents_file = work / "agents-download.yml"
    write_agents_file(agents_file, nodes)
    coordinator = Coordinator(work, agents_file, 3600.0, "download")
    sampler = Sampler(coordinator.proc.pid)
    sampler.start()
    try:
        coordinator.wait_for(lambda b: b.get("agents_healthy") == n, f"{n} healthy")
        time.sleep(0.5)
        per_batch = batch_size(n)
        plan_cpu, plan_wall = timed_batches(coordinator, lambda: plan_once(coordinator.url, n),
                                            3, per_batch)
        dest = work / "all.zip"
        with profiled(coordinator.proc.pid, profile and profile / f"fleet{n}-download.txt"):
            dl_cpu, dl_wall = timed_batches(
                coordinator, lambda: download_once(coordinator.url, n, dest), BATCHES, per_batch)
    finally:
        coordinator.stop()
        peak = sampler.stop()
    return {
        "plan_cpu_ms_per_node": statistics.median(plan_cpu) * 1000 / n,
        "plan_seconds": statistics.median(plan_wall),
        "downloads": BATCHES * per_batch,
        "download_cpu_ms_per_node": statistics.median(dl_cpu) * 1000 / n,
        "download_cpu_ms_per_node_batches": [c * 1000 / n for c in dl_cpu],
        "download_seconds": statistics.median(dl_wall),
        "download_peak_rss_mib": peak,
    }


def compare_downloads(n: int, other: Path, rounds: int, work: Path) -> dict[str, Any]:
    """Interleaved A/B: this checkout's download coordinator against *other*'s."""
    root = work / "root"
    root.mkdir(parents=True, exist_ok=True)
    (root / "small.log").write_bytes(SMALL_FILE)
    sims, nodes = start_sims(n, root, work)
    agents_file = work / "agents-download.yml"
    write_agents_file(agents_file, nodes)
    trees = {"this": REPO, "other": other.resolve()}
    coordinators: dict[str, Coordinator] = {}
    try:
        for tag, repo in trees.items():
            coordinators[tag] = Coordinator(work, agents_file, 3600.0, tag, repo=repo)
        for c in coordinators.values():
            c.wait_for(lambda b: b.get("agents_healthy") == n, f"{n} healthy")
            download_once(c.url, n, work / "warm.zip")
        figures = ab_rounds(coordinators, n, rounds, work / "ab.zip")
    finally:
        for c in coordinators.values():
            c.stop()
        stop_sims(sims)
    this, other_ = figures["this"]["download"], figures["other"]["download"]
    return {
        "nodes": n, "rounds": rounds, "other": str(other),
        **{f"{tag}_{what}_cpu_ms_per_node": statistics.median(values)
           for tag, kinds in figures.items() for what, values in kinds.items()},
        "download_ratio_median": statistics.median(a / b for a, b in zip(this, other_,
                                                                          strict=True)),
        "this_download_batches": this, "other_download_batches": other_,
    }


def ab_rounds(coordinators: dict[str, Coordinator], n: int, rounds: int,
              dest: Path) -> dict[str, dict[str, list[float]]]:
    """CPU ms per node of each coordinator's downloads and plans, the order swapped every
    round."""
    per_batch = batch_size(n)
    figures: dict[str, dict[str, list[float]]] = {
        tag: {"download": [], "plan": []} for tag in coordinators}
    tags = list(coordinators)
    for r in range(rounds):
        for tag in tags if r % 2 == 0 else tags[::-1]:
            c = coordinators[tag]
            cpu, _ = timed_batches(c, functools.partial(download_once, c.url, n, dest), 1,
                                   per_batch)
            figures[tag]["download"].append(cpu[0] * 1000 / n)
            cpu, _ = timed_batches(c, functools.partial(plan_once, c.url, n), 1, per_batch)
            figures[tag]["plan"].append(cpu[0] * 1000 / n)
    return figures


def stop_sims(sims: list[subprocess.Popen[bytes]]) -> None:
    for proc in sims:
        proc.terminate()
    for proc in sims:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(n: int, work: Path, profile: Path | None) -> dict[str, Any]:
    root = work / "root"
    root.mkdir(parents=True, exist_ok=True)
    (root / "small.log").write_bytes(SMALL_FILE)
    sims, nodes = start_sims(n, root, work)
    try:
        result: dict[str, Any] = {"nodes": n, "sim_processes": len(sims)}
        result.update(health_phase(n, nodes, work, profile))
        result.update(download_phase(n, nodes, work, profile))
    finally:
        stop_sims(sims)
    result["cpu_ms_per_node"] = (result["discovery_cpu_ms_per_node"]
                                 + result["download_cpu_ms_per_node"])
    result["peak_rss_mib"] = max(result["health_peak_rss_mib"], result["download_peak_rss_mib"])
    return result


# -- report ---------------------------------------------------------------------------------


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [r["nodes"] for r in results]
    fig, (cpu_ax, time_ax, mem_ax) = plt.subplots(1, 3, figsize=(15, 4.4))
    series = [("cpu_ms_per_node", "o-", "total: discovery + download"),
              ("download_cpu_ms_per_node", "s-", "merged download (incl. plan)"),
              ("plan_cpu_ms_per_node", "v--", "plan alone (one /list per node)"),
              ("discovery_cpu_ms_per_node", "^-", "discovery to all healthy"),
              ("health_round_cpu_ms_per_node", "d:", "one steady health round")]
    for key, style, label in series:
        cpu_ax.plot(nodes, [r[key] for r in results], style, label=label)
    cpu_ax.axhline(CPU_TARGET_MS, linestyle=":", color="gray",
                   label=f"target {CPU_TARGET_MS:g} ms/node")
    cpu_ax.set_xscale("log")
    top = max([CPU_TARGET_MS] + [r["cpu_ms_per_node"] for r in results])
    cpu_ax.set_ylim(0, top * 1.45)  # room for the legend above the lines
    cpu_ax.set_xlabel("nodes")
    cpu_ax.set_ylabel("coordinator CPU, ms per node")
    cpu_ax.set_title("CPU per node (flat = linear cost)")
    cpu_ax.legend(fontsize=7, loc="upper center", ncol=2)
    time_ax.plot(nodes, [r["download_seconds"] for r in results], "o-",
                 label="merged download, wall")
    time_ax.plot(nodes, [r["cpu_ms_per_node"] * r["nodes"] / 1000 for r in results], "s-",
                 label="coordinator CPU, discovery + download")
    time_ax.plot(nodes, [r["seconds_to_all_healthy"] for r in results], "^-",
                 label="discovery: file written → all healthy")
    time_ax.plot(nodes, [CPU_TARGET_MS * n / 1000 for n in nodes], ":", color="gray",
                 label=f"CPU target {CPU_TARGET_MS:g} ms/node")
    time_ax.set_xlabel("nodes")
    time_ax.set_ylabel("seconds")
    time_ax.set_title("time")
    time_ax.legend(fontsize=7)
    mem_ax.plot(nodes, [r["peak_rss_mib"] for r in results], "o-", color="tab:red",
                label="coordinator peak RSS")
    mem_ax.axhline(RSS_TARGET_MIB, linestyle=":", color="gray",
                   label=f"target {RSS_TARGET_MIB:g} MiB at 500")
    mem_ax.set_xlabel("nodes")
    mem_ax.set_ylabel("MiB")
    mem_ax.set_ylim(bottom=0)
    mem_ax.set_title("memory")
    mem_ax.legend(fontsize=7)
    for ax in (cpu_ax, time_ax, mem_ax):
        ax.grid(alpha=0.3)
    fig.suptitle("fleetzip coordinator: discovery, health polling and one small file from "
                 "every node")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def print_report(results: list[dict[str, Any]]) -> bool:
    ref = results[0]
    head = (f"{'nodes':>6} {'healthy s':>9} {'disc ms/n':>9} {'round ms/n':>10} "
            f"{'plan ms/n':>9} {'dl s':>6} {'dl ms/n':>8} {'total ms/n':>10} {'vs ref':>7} "
            f"{'x target':>8} {'RSS MiB':>8}")
    print("\n" + head)
    for r in results:
        print(f"{r['nodes']:>6} {r['seconds_to_all_healthy']:>9.2f} "
              f"{r['discovery_cpu_ms_per_node']:>9.3f} {r['health_round_cpu_ms_per_node']:>10.3f} "
              f"{r['plan_cpu_ms_per_node']:>9.3f} {r['download_seconds']:>6.2f} "
              f"{r['download_cpu_ms_per_node']:>8.3f} {r['cpu_ms_per_node']:>10.3f} "
              f"{r['cpu_ms_per_node'] / ref['cpu_ms_per_node']:>6.2f}x "
              f"{r['cpu_ms_per_node'] / CPU_TARGET_MS:>7.2f}x {r['peak_rss_mib']:>8.1f}")
    last = results[-1]
    linear = last["cpu_ms_per_node"] <= LINEAR_LIMIT * ref["cpu_ms_per_node"]
    overruns = sum(r["health_round_overruns"] for r in results)
    ok = (last["cpu_ms_per_node"] <= CPU_TARGET_MS and last["peak_rss_mib"] <= RSS_TARGET_MIB
          and linear and overruns == 0)
    print(f"\ntargets at {last['nodes']} nodes (≤ {CPU_TARGET_MS:g} ms CPU/node, ≤ "
          f"{RSS_TARGET_MIB:g} MiB, ≤ {LINEAR_LIMIT:g}x the {ref['nodes']}-node CPU/node, "
          f"no health round overrun): {'met' if ok else 'NOT met'}")
    return ok


def print_profile(profile: Path) -> None:
    for path in sorted(profile.glob("fleet*.txt")):
        print(f"\n{path.name}: top functions by own samples (self %, inclusive %)")
        for name, own, incl in summarise_profile(path):
            print(f"  {own:5.1f} {incl:5.1f}  {name}")


def run_compare(args: argparse.Namespace) -> int:
    print(f"\n{'nodes':>6} {'this dl ms/n':>12} {'other dl ms/n':>13} {'ratio':>6} "
          f"{'this plan':>9} {'other plan':>10}   (medians of {args.rounds} rounds; other = "
          f"{args.compare})")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"fleet{n}-ab-") as tmp:
            r = compare_downloads(n, args.compare, args.rounds, Path(tmp))
        print(f"{n:>6} {r['this_download_cpu_ms_per_node']:>12.3f} "
              f"{r['other_download_cpu_ms_per_node']:>13.3f} {r['download_ratio_median']:>6.3f} "
              f"{r['this_plan_cpu_ms_per_node']:>9.3f} {r['other_plan_cpu_ms_per_node']:>10.3f}",
              flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--out", type=Path, default=HERE / "fleet_scale.json")
    parser.add_argument("--png", type=Path, default=HERE / "fleet_scale.png")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks into this dir")
    parser.add_argument("--compare", type=Path, metavar="TREE",
                        help="interleaved A/B of the download against another checkout")
    parser.add_argument("--rounds", type=int, default=15, help="A/B rounds (with --compare)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.compare:
        return run_compare(args)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"fleet{n}-") as tmp:
            result = measure(n, Path(tmp), args.profile)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.profile:
        print_profile(args.profile)
    else:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        plot(results, args.png)
    return 0 if print_report(results) else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
