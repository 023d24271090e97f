"""Peak memory of the agent while many real clients download a big file at once.

Each *scenario* starts a fresh agent, lets ``N`` clients download the same ``--size`` (1 GiB)
file for ``--duration`` seconds (they need not finish), and reports the agent's **peak RSS as
the kernel counted it** (``VmHWM`` from ``/proc/PID/status``: no sample can miss the start
burst), the **read budget's high-water** (``/metrics``: bytes read from disk and not yet
handed to the kernel, across all downloads), the RSS after the clients left and whether the
descriptors came back to their idle count.

Clients are what people use, with the kernel's default socket buffers:

* ``curl`` — one ``curl --limit-rate RATE`` process per client (no limit for ``fast``);
  all of them are started first and wait on stdin for their URL (``curl -K -``), so they
  arrive within a few milliseconds of each other;
* ``python`` — raw-socket readers in one asyncio process, reading ``RATE`` bytes/s in 64 KiB
  ``recv`` calls; ``--rcvbuf`` shrinks their ``SO_RCVBUF`` (the old bench's 16 KiB).

The same load is run against nginx (``sendfile on``, one worker; its processes' VmHWM summed)
as the reference measured in the same run (``--reference none`` skips it).

    .venv/bin/python bench/agent_rss.py --matrix --rounds 3      # the standard scenarios
    .venv/bin/python bench/agent_rss.py --client curl --clients 32 --rate 1MB --duration 45

Targets (issue 14): 32 curl readers at 1 MB/s ≤ 64 MiB; 200 arriving at once ≤ 80 MiB with
every one served (200) or refused (429).

Exit codes: 0 done; 1 a target missed (only with ``--strict``); 2 usage / missing tool;
3 the load did not happen as asked (a client got neither bytes nor a 429), so the figures
would mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from _common import (
    MIB,
    Server,
    agent_server,
    die,
    ensure_file,
    machine_notes,
    median,
    nginx_binary,
    nginx_server,
    parse_env,
    parse_size,
    print_json_line,
    print_table,
    require_curl,
    running,
    static_server,
    work_dir,
)

READ_SIZE = 64 * 1024  # python readers: one recv per 64 KiB, ~16 wake-ups/s at 1 MB/s
STALL_SECONDS = 15.0  # a client gives up this long after --duration if the server stalls
SETTLE_SECONDS = 2.0  # after the clients left: let the agent see them go, then read RSS/fds


@dataclass(frozen=True)
class Scenario:
    name: str
    client: str  # "curl" or "python"
    clients: int
    rate: int  # bytes/s per client; 0 = as fast as it can
    duration: float
    slots: int = 32  # the agent's max_concurrent_downloads
    rcvbuf: int | None = None  # python readers only; None = the kernel's default
    target: int | None = None  # peak RSS target in bytes, if the issue sets one


# The standard set (--matrix): the two targets, then the same loads fast and with the
# Python readers, so a change that helps one client type and hurts another shows.
MATRIX = (
    Scenario("curl 32 x 1MB/s", "curl", 32, 1_000_000, 45.0, target=64 * MIB),
    Scenario("curl 200 at once x 1MB/s", "curl", 200, 1_000_000, 30.0, target=80 * MIB),
    Scenario("curl 32 fast", "curl", 32, 0, 20.0),
    Scenario("python 32 x 1MB/s", "python", 32, 1_000_000, 30.0),
    Scenario("python 200 at once x 1MB/s", "python", 200, 1_000_000, 30.0),
)


@dataclass
class ClientResult:
    status: int = 0
    received: int = 0
    error: str = ""


@dataclass
class Run:
    scenario: Scenario
    server: str
    baseline: int = 0  # RSS right after start, bytes
    peak: int = 0  # VmHWM, bytes (summed over the server's processes)
    after: int = 0  # RSS after the clients left
    fds_idle: int = 0
    fds_after: int = 0
    budget: int | None = None  # the agent's read_budget
    budget_high_water: int | None = None
    budget_in_use_after: int | None = None
    mapped_high_water: int | None = None  # read buffers mapped (in use + pooled), at most
    statuses: dict[int, int] = field(default_factory=dict)
    received: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def load_ok(self) -> bool:
        return not self.errors and set(self.statuses) <= {200, 429} and self.statuses.get(
            200, 0) > 0

    def as_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario.name, "server": self.server,
                "baseline": self.baseline, "peak": self.peak, "after": self.after,
                "fds_idle": self.fds_idle, "fds_after": self.fds_after, "budget": self.budget,
                "budget_high_water": self.budget_high_water,
                "budget_in_use_after": self.budget_in_use_after,
                "mapped_high_water": self.mapped_high_water,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "received": self.received, "errors": self.errors[:5]}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--matrix", action="store_true",
                   help="run the standard scenarios (ignores --client/--clients/--rate/...)")
    p.add_argument("--client", choices=("curl", "python"), default="curl")
    p.add_argument("--clients", type=int, default=32, help="clients at once [32]")
    p.add_argument("--rate", default="1MB", help="bytes/s each client reads; 0 = fast [1MB]")
    p.add_argument("--rcvbuf", default=None,
                   help="python readers' SO_RCVBUF, e.g. 16KiB [kernel default]")
    p.add_argument("--slots", type=int, default=32, help="agent max_concurrent_downloads [32]")
    p.add_argument("--size", default="1GiB", help="file size [1GiB]")
    p.add_argument("--duration", type=float, default=45.0,
                   help="seconds the clients read before hanging up [45]")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat every scenario; medians are reported [1]")
    p.add_argument("--chunk-size", default=None, help="agent chunk_size [agent default]")
    p.add_argument("--read-budget", default=None, help="agent read_budget [agent default]")
    p.add_argument("--reference", default="nginx",
                   help="reference servers, comma-separated: nginx, tornado-static, none "
                        "[nginx]")
    p.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the agent only (repeatable), e.g. "
                        "MALLOC_ARENA_MAX=1")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    return p.parse_args(argv)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    if args.matrix:
        return list(MATRIX)
    rate = parse_size(args.rate)
    name = f"{args.client} {args.clients} x " + (f"{args.rate}/s" if rate else "fast")
    rcvbuf = parse_size(args.rcvbuf) if args.rcvbuf else None
    if rcvbuf is not None:
        if args.client != "python":
            die("--rcvbuf applies to --client python only")
        name += f" rcvbuf {args.rcvbuf}"
    return [Scenario(name, args.client, args.clients, rate, args.duration, args.slots, rcvbuf)]


# --------------------------------------------------------------------------- /proc readers


def tree_pids(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        top = psutil.Process(pid)
        return [pid, *(c.pid for c in top.children(recursive=True))]
    return [pid]


def proc_status_kib(pid: int, key: str) -> int:
    """A ``VmXxx:`` line of ``/proc/PID/status``, in bytes (0 when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def tree_status(pid: int, key: str) -> int:
    return sum(proc_status_kib(p, key) for p in tree_pids(pid))


def fd_count(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in tree_pids(pid))


def agent_metrics(base_url: str) -> dict[str, float]:
    """``fleetzip_agent_read_budget_*`` gauges from ``/metrics`` (empty if there are none)."""
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(("fleetzip_agent_read_budget", "fleetzip_agent_read_buffers")):
            values[name] = float(value)
    return values


# --------------------------------------------------------------------------- curl clients


def start_curls(url: str, scenario: Scenario) -> list[subprocess.Popen[str]]:
    """Start one curl per client, each waiting on stdin for its URL (``-K -``)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-K", "-", "--max-time", str(scenario.duration),
            "-w", "%{http_code} %{size_download}"]
    if scenario.rate:
        argv += ["--limit-rate", str(scenario.rate)]
    return [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
            for _ in range(scenario.clients)]


def run_curls(url: str, scenario: Scenario) -> list[ClientResult]:
    procs = start_curls(url, scenario)
    try:
        for proc in procs:  # all started: now give them the URL, as close together as we can
            assert proc.stdin is not None
            proc.stdin.write(f'url = "{url}"\n')
            proc.stdin.close()
        results = []
        for proc in procs:
            assert proc.stdout is not None
            proc.wait(timeout=scenario.duration + STALL_SECONDS)
            out = proc.stdout.read()
            status, _, size = out.partition(" ")
            result = ClientResult(int(status or 0), int(float(size or 0)))
            if proc.returncode not in (0, 28):  # 28: --max-time reached, as planned
                result.error = f"curl exit {proc.returncode}"
            results.append(result)
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- python readers


async def read_head(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                    result: ClientResult) -> tuple[int, int]:
    """Read the response head; set the status; (Content-Length, body bytes already read)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ConnectionError(f"closed after {len(buf)} header bytes")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    result.status = int(lines[0].split()[1])
    length = -1
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return length, len(rest)


async def python_client(url: str, scenario: Scenario) -> ClientResult:
    """GET *url* and read the body at the scenario's rate until its duration is over."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    result = ClientResult()
    deadline = time.monotonic() + scenario.duration
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if scenario.rcvbuf is not None:  # before connect(): the window scale is agreed then
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, scenario.rcvbuf)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(scenario.duration + STALL_SECONDS):
            await loop.sock_connect(sock, (parts.hostname, parts.port))
            request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                       "Connection: close\r\n\r\n")
            await loop.sock_sendall(sock, request.encode())
            length, result.received = await read_head(loop, sock, result)
            if result.status == 200:
                await paced_read(loop, sock, result, length, scenario.rate, deadline)
    except (OSError, ValueError, IndexError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    return result


async def paced_read(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                     result: ClientResult, length: int, rate: int, deadline: float) -> None:
    begin = time.monotonic()
    while result.received < length:
        now = time.monotonic()
        if now >= deadline:
            return
        ahead = result.received / rate - (now - begin) if rate else 0.0
        if ahead > 0:
            await asyncio.sleep(min(ahead, deadline - now))
            continue
        data = await loop.sock_recv(sock, READ_SIZE)
        if not data:
            result.error = f"closed early at {result.received} bytes"
            return
        result.received += len(data)


async def run_python(url: str, scenario: Scenario) -> list[ClientResult]:
    tasks = [asyncio.create_task(python_client(url, scenario)) for _ in range(scenario.clients)]
    return list(await asyncio.gather(*tasks))


# --------------------------------------------------------------------------- one measurement


def measure(server: Server, scenario: Scenario) -> Run:
    """Run *scenario*'s clients against *server* (fresh, started) and read its memory."""
    run = Run(scenario, server.name, baseline=tree_status(server.pid, "VmRSS"),
              fds_idle=fd_count(server.pid))
    if scenario.client == "curl":
        clients = run_curls(server.file_url, scenario)
    else:
        clients = asyncio.run(run_python(server.file_url, scenario))
    time.sleep(SETTLE_SECONDS)
    run.peak = tree_status(server.pid, "VmHWM")
    run.after = tree_status(server.pid, "VmRSS")
    run.fds_after = fd_count(server.pid)
    budget = agent_metrics(server.base_url) if server.name == "agent" else {}
    if budget:
        run.budget = int(budget.get("fleetzip_agent_read_budget_bytes", 0))
        run.budget_high_water = int(budget.get("fleetzip_agent_read_budget_high_water_bytes", 0))
        run.budget_in_use_after = int(budget.get("fleetzip_agent_read_budget_in_use_bytes", 0))
        run.mapped_high_water = int(
            budget.get("fleetzip_agent_read_buffers_mapped_high_water_bytes", 0))
    run.statuses = dict(Counter(c.status for c in clients))
    run.received = sum(c.received for c in clients)
    run.errors = sorted({f"{c.status} {c.error}" for c in clients
                         if c.error or c.status not in (200, 429)
                         or (c.status == 200 and c.received == 0)})
    return run


def make_server(kind: str, tmp: Path, path: Path, scenario: Scenario,
                args: argparse.Namespace) -> Server:
    sub = tmp / f"{kind}-{time.monotonic_ns()}"
    sub.mkdir()
    if kind == "agent":
        cfg: dict[str, Any] = {"max_concurrent_downloads": scenario.slots, "max_bandwidth": 0}
        if args.chunk_size:
            cfg["chunk_size"] = args.chunk_size
        if args.read_budget:
            cfg["read_budget"] = args.read_budget
        return agent_server(sub, path.parent, path.name, env=parse_env(args.agent_env), **cfg)
    if kind == "nginx":
        return nginx_server(sub, path.parent, path.name, workers="1", max_conns=scenario.slots)
    return static_server(sub, path.parent, path.name)


def measure_fresh(kind: str, tmp: Path, path: Path, scenario: Scenario,
                  args: argparse.Namespace) -> Run:
    server = make_server(kind, tmp, path, scenario, args)
    with running([server]):
        time.sleep(0.5)  # let it settle after its first answer
        return measure(server, scenario)


# --------------------------------------------------------------------------- report


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f}"


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    """Median figures per (scenario, server), in the order first seen."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.scenario.name, run.server), []).append(run)
    rows = []
    for (_, server), group in groups.items():
        def med(attr: str, group: list[Run] = group) -> float | None:
            values = [getattr(r, attr) for r in group if getattr(r, attr) is not None]
            return median(values) if values else None
        statuses: Counter[int] = Counter()
        for r in group:
            statuses.update(r.statuses)
        rows.append({
            "scenario": group[0].scenario, "server": server, "rounds": len(group),
            "baseline": med("baseline"), "peak": med("peak"),
            "peaks": [r.peak for r in group], "after": med("after"),
            "fds": f"{max(r.fds_idle for r in group)}→{max(r.fds_after for r in group)}",
            "budget": med("budget"), "budget_high_water": med("budget_high_water"),
            "budget_in_use_after": med("budget_in_use_after"),
            "mapped_high_water": med("mapped_high_water"),
            "statuses": dict(sorted(statuses.items())),
            "MiB_per_s": median([r.received / r.scenario.duration / MIB for r in group]),
        })
    return rows


def report(runs: list[Run], args: argparse.Namespace, size: int) -> bool:
    rows = summarise(runs)
    refs = {(r["scenario"].name, r["server"]): r["peak"] for r in rows if r["server"] != "agent"}
    table = []
    all_met = True
    for r in rows:
        scenario: Scenario = r["scenario"]
        verdict = ""
        if r["server"] == "agent" and scenario.target is not None:
            met = r["peak"] <= scenario.target and max(r["peaks"]) <= scenario.target
            all_met &= met
            verdict = f"≤ {scenario.target // MIB}: {'met' if met else 'MISSED'}"
        ref = refs.get((scenario.name, "nginx"))
        vs = f"{r['peak'] / ref:.1f}" if ref and r["server"] == "agent" else ""
        table.append([scenario.name, r["server"], r["rounds"], mib(r["baseline"]),
                      mib(r["peak"]), " ".join(mib(p) for p in r["peaks"]), mib(r["after"]),
                      r["fds"], mib(r["budget"]), mib(r["budget_high_water"]),
                      mib(r["mapped_high_water"]), mib(r["budget_in_use_after"]),
                      " ".join(f"{k}:{v}" for k, v in r["statuses"].items()),
                      f"{r['MiB_per_s']:.0f}", vs, verdict])
    print()
    print_table(["scenario", "server", "n", "idle RSS", "peak (VmHWM)", "peaks", "after",
                 "fds idle→after", "budget", "budget hw", "mapped hw", "in use after",
                 "statuses", "MiB/s", "vs nginx", "target"], table)
    print("(MiB; medians over the rounds; 'peaks' lists every round)")
    print_json_line({
        "bench": "agent_rss", "size": size, "rounds": args.rounds, "matrix": args.matrix,
        "chunk_size": args.chunk_size, "read_budget": args.read_budget,
        "agent_env": args.agent_env, "runs": [r.as_json() for r in runs],
        "all_targets_met": all_met, "machine": machine_notes(),
    })
    return all_met


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = scenarios(args)
    references = [r for r in args.reference.split(",") if r and r != "none"]
    unknown = set(references) - {"nginx", "tornado-static"}
    if unknown:
        die(f"--reference: unknown server(s) {sorted(unknown)}")
    if any(s.client == "curl" for s in plan):
        require_curl()
    if "nginx" in references:
        nginx_binary()
    size = parse_size(args.size)
    path = ensure_file(f"bench-{size}.bin", size)
    runs: list[Run] = []
    with work_dir("fleetzip-rss-", keep=args.keep) as tmp:
        for n in range(args.rounds):
            for scenario in plan:
                for kind in ["agent", *references]:
                    run = measure_fresh(kind, tmp, path, scenario, args)
                    runs.append(run)
                    print(f"round {n + 1}/{args.rounds} {scenario.name} {kind}: peak "
                          f"{mib(run.peak)} MiB, budget high-water "
                          f"{mib(run.budget_high_water)} MiB, {run.statuses}", flush=True)
    ok = report(runs, args, size)
    bad = [(r.scenario.name, r.server, r.errors[:3], r.statuses) for r in runs if not r.load_ok]
    if bad:
        print(f"the load did not happen as asked: {bad}", file=sys.stderr)
        return 3
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
