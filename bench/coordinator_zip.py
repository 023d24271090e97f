"""Merged-zip throughput: the coordinator vs fetching the same files straight from the agents
(curl, in parallel) vs the common Flask + requests + zipstream-ng approach, in one run.

    .venv/bin/python bench/coordinator_zip.py [--agents 4] [--size 256MiB] [--rounds 3]
    .venv/bin/python bench/coordinator_zip.py --compression deflate   # 4 x 64 MiB of logs

``--compression deflate`` serves generated access logs (bench/agent_deflate.py) instead of
random bytes, and compares archive sizes too. ``--slow-client`` (on by default) also
downloads from the coordinator and from flask at 5 MB/s for ``--slow-seconds`` and reports
each server's peak RSS meanwhile.

N agents on 127.0.0.2.. each serve one file of --size (hard links of one generated file,
read from the page cache). Each round measures, in turn:

* direct: N curl processes download the N files from the agents at once (wall time);
* coordinator: curl downloads ``/api/download?root=data`` (stored, exact Content-Length);
* flask: curl downloads the same merged zip from bench/flask_baseline.py under waitress;
* floor: curl downloads the N files' bytes through bench/relay_floor.py, which only
  forwards them and computes SHA-256 + CRC-32 of every byte: the least work any merged-zip
  server must do per byte, so the ceiling of this machine for the coordinator.

Targets (issue 12): stored: coordinator >= 1.5 x flask, coordinator CPU <= 0.6 s/GiB, peak
RSS <= 128 MiB with a 5 MB/s client; deflate: >= 5 x flask, archive <= 1.25 x flask's,
coordinator CPU <= 0.5 s/GiB. The machine is small and shared: only ratios measured in the
same run mean anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
import yaml
from _common import (
    DATA_DIR,
    MIB,
    REPO_DIR,
    RssSampler,
    Server,
    ensure_file,
    free_port,
    human_bytes,
    machine_notes,
    median,
    parse_size,
    print_table,
    py_spy,
    require_curl,
    running,
    summarise_profile,
    warm_page_cache,
    work_dir,
)

FILE = "f.bin"
MODES = ("direct", "coordinator", "flask", "floor")
TARGET_FLASK = {"stored": 1.5, "deflate": 5.0}
TARGET_CPU = {"stored": 0.6, "deflate": 0.5}  # coordinator CPU s per GiB of source
TARGET_SIZE = 1.25  # deflate: archive size / flask's
TARGET_RSS = 128 * MIB
SLOW_RATE = "5M"  # curl --limit-rate: the 5 MB/s client


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--size", default=None, help="per agent (256MiB stored, 64MiB deflate)")
    parser.add_argument("--compression", choices=("stored", "deflate"), default="stored")
    parser.add_argument("--slow-seconds", type=float, default=15.0,
                        help="length of the 5 MB/s client download (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-time", type=float, default=300.0)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--chunk-size", default=None,
                        help="the coordinator's download.chunk_size (default: its own)")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="sample the coordinator with py-spy into FILE (not for the record)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def agents(tmp: Path, source: Path, count: int) -> list[Server]:
    servers = []
    for i in range(count):
        host = f"127.0.0.{i + 2}"
        root = DATA_DIR / f"coordinator-n{i}"  # next to the source: hard links work there
        root.mkdir(exist_ok=True)
        target = root / FILE
        if not target.exists() or not target.samefile(source):
            target.unlink(missing_ok=True)
            os.link(source, target)  # same bytes, one copy in the page cache
        port = free_port(host)
        cfg = tmp / f"n{i}.yml"
        cfg.write_text(yaml.safe_dump({"node": f"n{i}", "listen": f"{host}:{port}",
                                       "roots": {"data": str(root)}}))
        base = f"http://{host}:{port}"
        servers.append(Server(f"n{i}", [sys.executable, "-m", "agent", "--config", str(cfg)],
                              base, f"{base}/files/data/{FILE}", "/livez", tmp / f"n{i}.log"))
    return servers


def coordinator(tmp: Path, nodes: list[Server], chunk_size: str | None = None,
                compression: str = "stored") -> Server:
    port = free_port()
    cfg = tmp / "coordinator.yml"
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "agents": [{"name": s.name, "url": s.base_url} for s in nodes],
        "audit_log": str(tmp / "audit.log"),
    }
    if chunk_size:
        config["download"] = {"chunk_size": chunk_size}
    cfg.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{port}"
    return Server("coordinator", [sys.executable, "-m", "coordinator", "--config", str(cfg)],
                  base, f"{base}/api/download?root=data&name=bench&compression={compression}",
                  "/livez", tmp / "coordinator.log")


def wait_for_agents(coord: Server, count: int, timeout: float = 30.0) -> list[str]:
    """Until the coordinator polled every agent (their features decide the framing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{coord.base_url}/api/agents") as r:
            agents = json.load(r)["agents"]
        if len(agents) == count and all(a["health"] == "pass" for a in agents):
            return sorted({f for a in agents for f in a.get("features", [])})
        time.sleep(0.1)
    raise RuntimeError("the coordinator did not poll its agents in time")


def slow_client_rss(server: Server, url: str, seconds: float) -> int:
    """Peak RSS of *server* while one curl downloads *url* at 5 MB/s for *seconds*."""
    with RssSampler(server.pid, interval=0.1) as sampler:
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--limit-rate", SLOW_RATE,
                        "--max-time", str(seconds), url], check=False)
    return sampler.peak


def flask(tmp: Path, nodes: list[Server], compression: str = "stored") -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(REPO_DIR / "bench" / "flask_baseline.py"),
            "--listen", f"127.0.0.1:{port}"]
    for s in nodes:
        argv += ["--source", f"{s.name}={s.file_url}"]
    return Server("flask", argv, base, f"{base}/download?compression={compression}", "/livez",
                  tmp / "flask.log")


def floor(tmp: Path, nodes: list[Server]) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(REPO_DIR / "bench" / "relay_floor.py"),
            "--listen", f"127.0.0.1:{port}"]
    for s in nodes:
        argv += ["--source", s.file_url]
    return Server("floor", argv, base, f"{base}/download", "/livez", tmp / "floor.log")


def curl_many(urls: Sequence[str], max_time: float) -> tuple[list[int], float]:
    """Download every URL at once, each with its own curl to /dev/null; (sizes, wall s).

    Any curl failure or non-200 answer stops the run: a failed download measures nothing.
    """
    started = time.monotonic()
    procs = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--max-time", str(max_time),
                               "-w", "%{size_download} %{http_code}", url],
                              stdout=subprocess.PIPE, text=True) for url in urls]
    sizes = []
    for url, p in zip(urls, procs, strict=True):
        out, _ = p.communicate(timeout=max_time + 10)
        size_text, _, code = out.partition(" ")
        if p.returncode != 0 or code != "200":
            raise RuntimeError(f"curl {url}: exit {p.returncode}, HTTP {code or '-'}")
        sizes.append(int(float(size_text)))
    return sizes, time.monotonic() - started


@dataclass
class Mode:
    """One way to get the files, its downloads and the CPU its servers spent on them."""

    name: str
    urls: list[str]
    servers: list[Server]  # whose CPU is charged to this mode (the agents are charged apart)
    expected: list[int]  # bytes per URL; [] = whatever the warm-up download got
    exact: bool = True  # False: a deflate archive's size may vary (status.json's durations)
    speeds: list[float] = field(default_factory=list)
    cpu_per_gib: list[float] = field(default_factory=list)
    agent_cpu_per_gib: list[float] = field(default_factory=list)

    main_cpu_per_gib: list[float] = field(default_factory=list)  # the event-loop thread

    def run(self, agents: Sequence[Server], max_time: float) -> float:
        cpu = sum(s.cpu_seconds() for s in self.servers)
        main = sum(main_thread_cpu(s) for s in self.servers)
        agent_cpu = sum(s.cpu_seconds() for s in agents)
        sizes, seconds = curl_many(self.urls, max_time)
        close = all(abs(a - b) <= max(b // 1000, 4096) for a, b in zip(sizes, self.expected,
                                                                        strict=True))
        if sizes != self.expected and (self.exact or not close):
            raise RuntimeError(f"{self.name}: got {sizes} bytes, expected {self.expected}")
        gib = sum(sizes) / (1 << 30)
        self.speeds.append(sum(sizes) / seconds)
        self.cpu_per_gib.append((sum(s.cpu_seconds() for s in self.servers) - cpu) / gib)
        self.main_cpu_per_gib.append(
            (sum(main_thread_cpu(s) for s in self.servers) - main) / gib)
        self.agent_cpu_per_gib.append((sum(s.cpu_seconds() for s in agents) - agent_cpu) / gib)
        return seconds


def main_thread_cpu(server: Server) -> float:
    """user+system CPU seconds of *server*'s main thread (the coordinator's event loop)."""
    try:
        threads = psutil.Process(server.pid).threads()
    except psutil.Error:
        return float("nan")
    return next((t.user_time + t.system_time for t in threads if t.id == server.pid), 0.0)


def archive_size(coord: Server) -> int | None:
    with urllib.request.urlopen(urllib.request.Request(coord.file_url, method="HEAD")) as r:
        length = r.headers.get("Content-Length")
        return int(length) if length is not None else None


def run_rounds(modes: list[Mode], agents: Sequence[Server], args: argparse.Namespace) -> None:
    """Every round runs every mode once, the order rotated per round (shared noise)."""
    for mode in modes:  # untimed: connections, caches, imports; flask's zip64 size
        sizes, _ = curl_many(mode.urls, args.max_time)
        mode.expected = mode.expected or sizes
    for n in range(args.rounds):
        order = modes[n % len(modes):] + modes[:n % len(modes)]
        for mode in order:
            seconds = mode.run(agents, args.max_time)
            print(f"round {n + 1} {mode.name:<11} {human_bytes(sum(mode.expected))} in "
                  f"{seconds:.2f}s = {mode.speeds[-1] / MIB:.0f} MiB/s, server CPU "
                  f"{mode.cpu_per_gib[-1]:.2f} s/GiB (main thread "
                  f"{mode.main_cpu_per_gib[-1]:.2f})", flush=True)


def paired(a: Mode | None, b: Mode | None) -> float | None:
    """The median of the per-round ratios a/b (the same round shares the machine's noise)."""
    if a is None or b is None:
        return None
    return median([x / y for x, y in zip(a.speeds, b.speeds, strict=True)])


def report(modes: dict[str, Mode], args: argparse.Namespace, size: int,
           rss: dict[str, int]) -> bool:
    print_table(["path", "median MiB/s", "rounds MiB/s", "server CPU s/GiB",
                 "main thread s/GiB", "agents CPU s/GiB"],
                [[m.name, f"{median(m.speeds) / MIB:.0f}",
                  " ".join(f"{x / MIB:.0f}" for x in m.speeds),
                  f"{median(m.cpu_per_gib):.2f}" if m.servers else "-",
                  f"{median(m.main_cpu_per_gib):.2f}" if m.servers else "-",
                  f"{median(m.agent_cpu_per_gib):.2f}"] for m in modes.values()])
    coord = modes.get("coordinator")
    ratios = {"direct": paired(coord, modes.get("direct")),
              "flask": paired(coord, modes.get("flask"))}
    ok = True
    flask_mode = modes.get("flask")
    if coord is not None:
        cpu = median(coord.cpu_per_gib) * sum(coord.expected) / (size * args.agents)
        met = cpu <= TARGET_CPU[args.compression]
        ok = ok and met
        print(f"coordinator CPU = {cpu:.2f} s per GiB of source; target <= "
              f"{TARGET_CPU[args.compression]}: {'met' if met else 'MISSED'}")
        if flask_mode is not None:
            flask_cpu = median(flask_mode.cpu_per_gib) * sum(flask_mode.expected) / (
                size * args.agents)
            print(f"coordinator CPU / flask's = {cpu / flask_cpu:.2f}")
    if coord is not None and flask_mode is not None and args.compression == "deflate":
        ratio = sum(coord.expected) / sum(flask_mode.expected)
        met = ratio <= TARGET_SIZE
        ok = ok and met
        print(f"archive size coordinator / flask = {ratio:.3f} ({sum(coord.expected)} / "
              f"{sum(flask_mode.expected)} bytes); target <= {TARGET_SIZE}: "
              f"{'met' if met else 'MISSED'}")
    for name, peak in rss.items():
        met = name != "coordinator" or peak <= TARGET_RSS
        ok = ok and met
        print(f"peak RSS of {name} with a 5 MB/s client: {peak / MIB:.0f} MiB"
              + (f"; target <= {TARGET_RSS // MIB} MiB: {'met' if met else 'MISSED'}"
                 if name == "coordinator" else ""))
    ceiling = {"direct": paired(modes.get("floor"), modes.get("direct")),
               "flask": paired(modes.get("floor"), modes.get("flask")),
               "coordinator": paired(coord, modes.get("floor"))}
    for name, target in (("direct", None), ("flask", TARGET_FLASK[args.compression])):
        ratio = ratios[name]
        if ratio is None:
            continue
        medians = median(coord.speeds) / median(modes[name].speeds)  # type: ignore[union-attr]
        met = target is None or ratio >= target
        ok = ok and met
        goal = f"; target >= {target:g}: {'met' if met else 'MISSED'}" if target else ""
        print(f"coordinator / {name:<6} = {ratio:.2f} (median of per-round ratios; ratio of "
              f"medians {medians:.2f}){goal}")
    for name, ratio in ceiling.items():
        if ratio is not None:
            a, b = ("coordinator", "floor") if name == "coordinator" else ("floor", name)
            print(f"{a} / {b:<6} = {ratio:.2f} (median of per-round ratios)")
    print(json.dumps({
        "bench": "coordinator_zip", "agents": args.agents, "size": size, "rounds": args.rounds,
        "compression": args.compression, "peak_rss_slow_client": rss,
        "archive_bytes": {k: sum(m.expected) for k, m in modes.items()},
        "median_bytes_per_s": {k: median(m.speeds) for k, m in modes.items()},
        "server_cpu_s_per_gib": {k: median(m.cpu_per_gib) for k, m in modes.items()
                                 if m.servers},
        "main_thread_cpu_s_per_gib": {k: median(m.main_cpu_per_gib)
                                      for k, m in modes.items() if m.servers},
        "ratio_direct": ratios["direct"], "ratio_flask": ratios["flask"],
        "floor_ratio_direct": ceiling["direct"], "floor_ratio_flask": ceiling["flask"],
        "ratio_floor": ceiling["coordinator"],
        "targets_met": ok, "machine": machine_notes()}))
    return ok


def print_profile(path: Path) -> None:
    rows = [[frame[:100], f"{own:.1f}", f"{incl:.1f}"]
            for frame, own, incl in summarise_profile(path, top=25)]
    print(f"\ncoordinator profile (py-spy, {path}; % of samples of busy threads):")
    print_table(["frame", "self %", "incl %"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_curl()
    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(wanted) <= set(MODES) or not wanted:
        sys.exit(f"--modes: choose from {','.join(MODES)}")
    deflate = args.compression == "deflate"
    size = parse_size(args.size or ("64MiB" if deflate else "256MiB"))
    if deflate:
        from agent_deflate import ensure_log
        source = ensure_log(size)
        if "floor" in wanted:
            wanted.remove("floor")  # the floor relays stored bytes only
    else:
        source = ensure_file(f"bench-{size}.bin", size)
    warm_page_cache(source)
    rss: dict[str, int] = {}
    with work_dir("fleetzip-bench-zip-", args.keep) as tmp:
        nodes = agents(tmp, source, args.agents)
        coord = coordinator(tmp, nodes, args.chunk_size, args.compression)
        baseline = flask(tmp, nodes, args.compression)
        relay = floor(tmp, nodes)
        servers = [*nodes, coord] + ([baseline] if "flask" in wanted else []) + (
            [relay] if "floor" in wanted else [])
        with running(servers):
            features = wait_for_agents(coord, len(nodes))
            print(f"agents' features: {features or 'none (previous release)'}")
            zip_size = archive_size(coord)
            candidates = {
                "direct": Mode("direct", [s.file_url for s in nodes], [], [size] * len(nodes)),
                "coordinator": Mode("coordinator", [coord.file_url], [coord],
                                    [zip_size] if zip_size and not deflate else [],
                                    exact=not deflate),
                "flask": Mode("flask", [baseline.file_url], [baseline], [], exact=not deflate),
                "floor": Mode("floor", [relay.file_url], [relay], [size * len(nodes)]),
            }
            modes = {name: candidates[name] for name in MODES if name in wanted}
            profile = (py_spy(coord.pid, args.profile) if args.profile
                       else contextlib.nullcontext())
            with profile:
                run_rounds(list(modes.values()), nodes, args)
            if args.slow_seconds > 0:
                for server in [coord] + ([baseline] if "flask" in wanted else []):
                    rss[server.name] = slow_client_rss(server, server.file_url,
                                                       args.slow_seconds)
    ok = report(modes, args, size, rss)
    if args.profile is not None:
        print_profile(args.profile)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
