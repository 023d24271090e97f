"""Merged-zip throughput: the coordinator vs fetching the same files straight from the agents
(curl, in parallel) vs the common Flask + requests + zipstream-ng approach, in one run.

    .venv/bin/python bench/coordinator_zip.py [--agents 4] [--size 256MiB] [--rounds 3]

N agents on 127.0.0.2.. each serve one file of --size (hard links of one generated file,
read from the page cache). Each round measures, in turn:

* direct: N curl processes download the N files from the agents at once (wall time);
* coordinator: curl downloads ``/api/download?root=data`` (stored, exact Content-Length);
* flask: curl downloads the same merged zip from bench/flask_baseline.py under waitress.

Targets: coordinator >= 0.5 x direct, coordinator >= 2 x flask (medians of the rounds).
The machine is small and shared: only ratios measured in the same run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from _common import (
    DATA_DIR,
    MIB,
    REPO_DIR,
    Server,
    ensure_file,
    free_port,
    human_bytes,
    machine_notes,
    median,
    print_table,
    require_curl,
    running,
    warm_page_cache,
    work_dir,
)

FILE = "f.bin"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-time", type=float, default=300.0)
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


def coordinator(tmp: Path, nodes: list[Server]) -> Server:
    port = free_port()
    cfg = tmp / "coordinator.yml"
    cfg.write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{port}",
        "agents": [{"name": s.name, "url": s.base_url} for s in nodes],
        "audit_log": str(tmp / "audit.log"),
    }))
    base = f"http://127.0.0.1:{port}"
    return Server("coordinator", [sys.executable, "-m", "coordinator", "--config", str(cfg)],
                  base, f"{base}/api/download?root=data&name=bench", "/livez",
                  tmp / "coordinator.log")


def flask(tmp: Path, nodes: list[Server]) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(REPO_DIR / "bench" / "flask_baseline.py"),
            "--listen", f"127.0.0.1:{port}"]
    for s in nodes:
        argv += ["--source", f"{s.name}={s.file_url}"]
    return Server("flask", argv, base, f"{base}/download", "/livez", tmp / "flask.log")


def curl_many(urls: Sequence[str], max_time: float) -> tuple[int, float]:
    """Download every URL at once with its own curl; (bytes, wall seconds)."""
    started = time.monotonic()
    procs = [subprocess.Popen(["curl", "-s", "-f", "-o", "/dev/null", "--max-time",
                               str(max_time), "-w", "%{size_download}", url],
                              stdout=subprocess.PIPE, text=True) for url in urls]
    sizes = []
    for p in procs:
        out, _ = p.communicate(timeout=max_time + 10)
        if p.returncode != 0:
            raise RuntimeError(f"curl failed with {p.returncode}")
        sizes.append(int(float(out)))
    return sum(sizes), time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_curl()
    from _common import parse_size

    size = parse_size(args.size)
    source = ensure_file(f"bench-{size}.bin", size)
    warm_page_cache(source)
    speeds: dict[str, list[float]] = {"direct": [], "coordinator": [], "flask": []}
    with work_dir("fleetzip-bench-zip-", args.keep) as tmp:
        nodes = agents(tmp, source, args.agents)
        with running([*nodes, coordinator(tmp, nodes), flask(tmp, nodes)]) as servers:
            coord, baseline = servers[-2], servers[-1]
            for round_no in range(args.rounds):
                for name, urls in (("direct", [s.file_url for s in nodes]),
                                   ("coordinator", [coord.file_url]),
                                   ("flask", [baseline.file_url])):
                    got, seconds = curl_many(urls, args.max_time)
                    assert got >= args.agents * size, (name, got)
                    speeds[name].append(got / seconds)
                    print(f"round {round_no + 1} {name:<11} {human_bytes(got)} in "
                          f"{seconds:.2f}s = {got / seconds / MIB:.0f} MiB/s", flush=True)
    med = {k: median(v) for k, v in speeds.items()}
    vs_direct, vs_flask = med["coordinator"] / med["direct"], med["coordinator"] / med["flask"]
    print_table(["path", "median MiB/s", "rounds"],
                [[k, f"{v / MIB:.0f}", " ".join(f"{x / MIB:.0f}" for x in speeds[k])]
                 for k, v in med.items()])
    print(f"coordinator / direct = {vs_direct:.2f} (target >= 0.5)")
    print(f"coordinator / flask  = {vs_flask:.2f} (target >= 2)")
    print(json.dumps({"bench": "coordinator_zip", "agents": args.agents, "size": size,
                      "median_bytes_per_s": med, "ratio_direct": round(vs_direct, 3),
                      "ratio_flask": round(vs_flask, 3), "machine": machine_notes()}))
    return 0 if vs_direct >= 0.5 and vs_flask >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
