"""Agent throughput vs nginx (sendfile on) vs Tornado's StaticFileHandler, one run.

All servers serve the same big file over loopback to ``curl`` and to ``wget`` (``--client``);
every round downloads it once from each server with each client, in an order rotated per
round so the machine's noise is shared; the tables give medians, one per client, with the
CPU seconds per GiB of each server and of the client (``/proc/PID/stat`` via psutil; the
client's from ``getrusage(RUSAGE_CHILDREN)``). The target (issues 2, 14): agent ≥ 0.9 x nginx.

nginx runs with ``worker_processes 1`` — equal footing with the single-process agent
(``--nginx-auto`` also measures ``worker_processes auto``). Every download is checked:
status 200 and exactly ``--size`` bytes, or the run fails.

    .venv/bin/python bench/agent_throughput.py --rounds 5 --size 1GiB

Exit codes: 0 done; 1 target missed (only with ``--strict``); 2 usage / missing tool;
3 a download failed (the measurement is invalid).
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    GIB,
    MIB,
    CurlResult,
    Server,
    agent_server,
    curl_download,
    ensure_file,
    machine_notes,
    median,
    nginx_binary,
    nginx_server,
    parse_env,
    parse_size,
    parse_sources,
    print_json_line,
    print_table,
    py_spy,
    require_curl,
    require_wget,
    running,
    static_server,
    summarise_profile,
    warm_page_cache,
    wget_download,
    work_dir,
)

TARGET_VS_NGINX = 0.9


@dataclass
class Tally:
    """What one server did over all rounds."""

    speeds: list[float] = field(default_factory=list)  # bytes/s, curl's figure
    cpu_per_gib: list[float] = field(default_factory=list)  # server CPU seconds per GiB
    client_cpu_per_gib: list[float] = field(default_factory=list)  # the client's, per GiB

    def summary(self) -> dict[str, Any]:
        return {
            "median_MiBps": round(median(self.speeds) / MIB, 1),
            "min_MiBps": round(min(self.speeds) / MIB, 1),
            "max_MiBps": round(max(self.speeds) / MIB, 1),
            "median_cpu_s_per_GiB": round(median(self.cpu_per_gib), 3),
            "median_client_cpu_s_per_GiB": round(median(self.client_cpu_per_gib), 3),
            "rounds_MiBps": [round(s / MIB, 1) for s in self.speeds],
        }


class DownloadFailed(RuntimeError):
    pass


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="downloads per server [5]")
    p.add_argument("--size", default="1GiB", help="file size [1GiB]")
    p.add_argument("--client", action="append", choices=CLIENTS, default=None,
                   help="download with this client (repeatable) [curl and wget]")
    p.add_argument("--duration", type=float, default=120.0,
                   help="max seconds for one download (curl --max-time) [120]")
    p.add_argument("--chunk-size", default=None,
                   help="agent chunk_size (default: the agent's own default, 1MiB)")
    p.add_argument("--nginx-auto", action="store_true",
                   help="also measure nginx with worker_processes auto")
    p.add_argument("--nginx-nosendfile", action="store_true",
                   help="also measure nginx with sendfile off (1 MiB output buffers)")
    p.add_argument("--profile", type=Path, default=None, metavar="FILE",
                   help="sample the agent with py-spy during the rounds (collapsed stacks to "
                        "FILE) and print its busiest frames; figures then are not for the record")
    p.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the agent only (repeatable), e.g. "
                        "MALLOC_ARENA_MAX=1")
    p.add_argument("--agent-from", action="append", default=[], metavar="NAME=DIR",
                   help="also measure the agent of another source tree, e.g. a commit "
                        "unpacked with `git archive C | tar -x -C DIR` (repeatable)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    return p.parse_args(argv)


def build_servers(tmp: Path, data: Path, name: str, args: argparse.Namespace) -> list[Server]:
    agent_cfg: dict[str, Any] = {"max_concurrent_downloads": 32, "max_bandwidth": 0}
    if args.chunk_size:
        agent_cfg["chunk_size"] = args.chunk_size
    servers = [
        agent_server(tmp, data, name, env=parse_env(args.agent_env), **agent_cfg),
        nginx_server(tmp, data, name, workers="1"),
        static_server(tmp, data, name),
    ]
    for other, source in parse_sources(args.agent_from).items():
        servers.append(agent_server(tmp, data, name, env=parse_env(args.agent_env), name=other,
                                    source=source, **agent_cfg))
    if args.nginx_auto:
        servers.append(nginx_server(tmp, data, name, workers="auto", name="nginx-auto"))
    if args.nginx_nosendfile:
        servers.append(nginx_server(tmp, data, name, name="nginx-nosendfile", sendfile=False))
    return servers


CLIENTS = {"curl": curl_download, "wget": wget_download}


def children_cpu() -> float:
    """user+system CPU of this script's reaped children: the clients it ran."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(server: Server, client: str, size: int,
            max_time: float) -> tuple[CurlResult, float, float]:
    cpu_before, client_before = server.cpu_seconds(), children_cpu()
    result = CLIENTS[client](server.file_url, max_time)
    cpu, client_cpu = server.cpu_seconds() - cpu_before, children_cpu() - client_before
    if result.status != 200 or result.size != size:
        raise DownloadFailed(
            f"{server.name} ({client}): status {result.status}, {result.size} of {size} bytes "
            f"from {server.file_url}\n{server.log_tail()}")
    return result, cpu, client_cpu


def run_rounds(servers: list[Server], size: int,
               args: argparse.Namespace) -> dict[str, dict[str, Tally]]:
    """Tallies by client, then by server."""
    tallies = {c: {s.name: Tally() for s in servers} for c in args.client}
    for server in servers:  # one untimed download each: connections, caches, imports warm
        measure(server, args.client[0], size, args.duration)
    for n in range(args.rounds):
        order = servers[n % len(servers):] + servers[:n % len(servers)]
        for client in args.client:
            line = []
            for server in order:
                result, cpu, client_cpu = measure(server, client, size, args.duration)
                tally = tallies[client][server.name]
                tally.speeds.append(result.speed)
                tally.cpu_per_gib.append(cpu * GIB / size)
                tally.client_cpu_per_gib.append(client_cpu * GIB / size)
                line.append(f"{server.name} {result.speed / MIB:.0f}")
            print(f"round {n + 1}/{args.rounds} {client}: " + ", ".join(line) + " MiB/s",
                  flush=True)
    return tallies


def paired_ratio(a: Tally, b: Tally) -> float:
    """Median over rounds of a/b measured in the same round (they shared that round's noise)."""
    return median([x / y for x, y in zip(a.speeds, b.speeds, strict=True)])


def report(tallies: dict[str, Tally], client: str, size: int, args: argparse.Namespace) -> bool:
    nginx = median(tallies["nginx"].speeds)
    static = median(tallies["tornado-static"].speeds)
    agent = median(tallies["agent"].speeds)
    rows = []
    for name, tally in tallies.items():
        s = tally.summary()
        rows.append([name, s["median_MiBps"], s["min_MiBps"], s["max_MiBps"],
                     s["median_cpu_s_per_GiB"], s["median_client_cpu_s_per_GiB"],
                     f"{median(tally.speeds) / nginx:.2f}"])
    print(f"\nclient: {client}")
    print_table(["server", "median MiB/s", "min", "max", "CPU s/GiB", f"{client} CPU s/GiB",
                 "vs nginx"], rows)
    ratio_nginx, ratio_static = agent / nginx, agent / static
    paired_nginx = paired_ratio(tallies["agent"], tallies["nginx"])
    paired_static = paired_ratio(tallies["agent"], tallies["tornado-static"])
    ok = ratio_nginx >= TARGET_VS_NGINX
    print(f"\nagent/nginx = {ratio_nginx:.2f} (target ≥ {TARGET_VS_NGINX}: "
          f"{'met' if ok else 'MISSED'}); agent/StaticFileHandler = {ratio_static:.2f}")
    print(f"median of per-round ratios: agent/nginx = {paired_nginx:.2f}, "
          f"agent/StaticFileHandler = {paired_static:.2f}")
    others = {name: (median(tallies["agent"].speeds) / median(t.speeds),
                     paired_ratio(tallies["agent"], t))
              for name, t in tallies.items() if name in args.agent_from_names}
    for name, (of_medians, paired) in others.items():
        print(f"agent/{name} = {of_medians:.2f} (median of per-round ratios {paired:.2f})")
    print_json_line({
        "bench": "agent_throughput", "client": client, "size": size, "rounds": args.rounds,
        "chunk_size": args.chunk_size, "nginx_worker_processes": 1,
        "agent_env": args.agent_env,
        "servers": {name: t.summary() for name, t in tallies.items()},
        "agent_vs_nginx": round(ratio_nginx, 3), "agent_vs_static": round(ratio_static, 3),
        "agent_vs_nginx_paired": round(paired_nginx, 3),
        "agent_vs_static_paired": round(paired_static, 3),
        "target_vs_nginx": TARGET_VS_NGINX, "target_met": ok, "machine": machine_notes(),
        "agent_from": args.agent_from,
        "agent_vs_other_agents": {n: [round(a, 3), round(b, 3)] for n, (a, b) in others.items()},
    })
    return ok


def print_profile(path: Path) -> None:
    rows = [[frame[:90], f"{own:.1f}", f"{incl:.1f}"]
            for frame, own, incl in summarise_profile(path)]
    print(f"\nagent profile (py-spy, {path}; busiest frames, % of samples of busy threads):")
    print_table(["frame", "self %", "incl %"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.agent_from_names = list(parse_sources(args.agent_from))
    args.client = list(dict.fromkeys(args.client or list(CLIENTS)))
    if "curl" in args.client:
        require_curl()
    if "wget" in args.client:
        require_wget()
    nginx_binary()
    size = parse_size(args.size)
    path = ensure_file(f"bench-{size}.bin", size)
    warm_page_cache(path)
    with work_dir("fleetzip-bench-", keep=args.keep) as tmp:
        servers = build_servers(tmp, path.parent, path.name, args)
        try:
            with running(servers):
                if args.profile is None:
                    tallies = run_rounds(servers, size, args)
                else:
                    with py_spy(servers[0].pid, args.profile):
                        tallies = run_rounds(servers, size, args)
        except DownloadFailed as exc:
            print(f"download failed, measurement invalid: {exc}", file=sys.stderr)
            return 3
    ok = all([report(tallies[client], client, size, args) for client in args.client])
    if args.profile is not None:
        print_profile(args.profile)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
