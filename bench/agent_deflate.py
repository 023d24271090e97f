"""Deflate codec and level for the agent's ``?compress=deflate`` frames, chosen by measurement.

Compresses the same page-cached text log the way ``agent/deflate.py`` does — one raw-deflate
compressor per download, ``--frame`` bytes of input per frame, each frame ended by
``Z_SYNC_FLUSH`` — with every available codec and level, and reports per variant:

* MB/s of input per CPU second (one core: the compressor is single-threaded), from
  ``/proc/self/stat`` utime + stime;
* the output size as a ratio of the reference, **zlib level 6 as one stream** (no flushes):
  what the seed's approach (zipstream, zlib's default level on the coordinator) writes,
  measured in the same run, as is its throughput.

The log is generated once under ``bench/data`` (``--log-size``, 64 MiB): combined-format
access-log lines with varied client addresses, users, timestamps in order, methods, paths with
ids and query strings, status codes, sizes, referers and user agents, from a fixed seed.
Every variant's output is decompressed and compared with the input before it counts.
Targets (issue 12): ≥ 5 x the seed's throughput at ≤ 1.25 x zlib-6's size.

Then (unless ``--no-agent``) the same log through a real agent process, downloaded by curl:
``?compress=deflate`` frames of the whole file as a ``Range`` (what the coordinator will ask),
a stored ``Range`` download (206: SHA-256 + CRC-32 of the bytes sent) and a plain download
(200: no digests). Reported per mode: the agent's CPU seconds per GiB of *source* (psutil,
from ``/proc/PID/stat``), MB of source per agent CPU second, wall MB/s of source, and bytes on
the wire.

    .venv/bin/python bench/agent_deflate.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DATA_DIR,
    GIB,
    MIB,
    agent_server,
    curl_download,
    machine_notes,
    median,
    parse_size,
    print_json_line,
    print_table,
    require_curl,
    running,
    warm_page_cache,
    work_dir,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
Compressor = Any  # zlib, isal_zlib and zlib_ng compress objects share the interface
Factory = Callable[[], Compressor]

METHODS = ["GET"] * 16 + ["POST"] * 3 + ["PUT", "DELETE", "HEAD"]
STATUSES = [200] * 40 + [304] * 6 + [301, 302, 400, 401, 403] + [404] * 4 + [500, 502, 503]
SECTIONS = ["api/v1/users", "api/v1/orders", "api/v2/search", "static/js", "static/css",
            "images/products", "account/settings", "cart", "checkout", "blog/posts", "health"]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "kube-probe/1.29", "Prometheus/2.48.1",
]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def log_lines(seed: int = 12) -> Iterator[str]:
    """Endless combined-format access-log lines, realistic enough for compression ratios."""
    rng = random.Random(seed)
    clients = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
               f"{rng.randint(1, 254)}" for _ in range(5000)]
    users = ["-"] * 20 + [f"user{rng.randint(1, 9999)}" for _ in range(200)]
    now = 1_704_067_200.0  # 2024-01-01
    while True:
        now += rng.expovariate(40.0)
        t = time.gmtime(now)
        stamp = (f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                 f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
        section = rng.choice(SECTIONS)
        path = f"/{section}/{rng.randint(1, 99999)}"
        if rng.random() < 0.3:
            path += f"?page={rng.randint(1, 50)}&sort={rng.choice(['asc', 'desc'])}"
        status = rng.choice(STATUSES)
        size = 0 if status in (304, 301, 302) else int(rng.lognormvariate(8, 1.5))
        referer = "-" if rng.random() < 0.5 else f"https://shop.example.com/{rng.choice(SECTIONS)}"
        yield (f'{rng.choice(clients)} - {rng.choice(users)} [{stamp}] '
               f'"{rng.choice(METHODS)} {path} HTTP/1.1" {status} {size} "{referer}" '
               f'"{rng.choice(AGENTS)}" {rng.random() * 0.8:.3f}\n')


def ensure_log(size: int) -> Path:
    """An access log of exactly *size* bytes under ``bench/data``, made once, 1 MiB at a time."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"access-{size}.log"
    if path.exists() and path.stat().st_size == size:
        return path
    tmp = path.with_suffix(".partial")
    lines = log_lines()
    with tmp.open("wb") as out:
        left = size
        while left > 0:
            block: list[str] = []
            length = 0
            while length < min(left, MIB):
                block.append(next(lines))
                length += len(block[-1])
            data = "".join(block).encode()[:left]
            out.write(data)
            left -= len(data)
    tmp.replace(path)
    return path


def codecs() -> dict[str, Factory]:
    """Raw-deflate compressor factories by name (codec-level)."""
    found: dict[str, Factory] = {}
    for level in (1, 6):
        found[f"zlib-{level}"] = lambda lv=level: zlib.compressobj(lv, zlib.DEFLATED, -15)
    try:
        from zlib_ng import zlib_ng

        for level in (1, 2, 6):
            found[f"zlib-ng-{level}"] = lambda lv=level: zlib_ng.compressobj(
                lv, zlib_ng.DEFLATED, -15
            )
    except ImportError:
        print("zlib-ng is not installed: its rows are missing", file=sys.stderr)
    try:
        from isal import isal_zlib

        for level in (0, 1, 2, 3):
            found[f"isal-{level}"] = lambda lv=level: isal_zlib.compressobj(
                lv, isal_zlib.DEFLATED, -15
            )
    except ImportError:
        print("isal is not installed: its rows are missing", file=sys.stderr)
    return found


def cpu_seconds() -> float:
    with open("/proc/self/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def compress_file(fd: int, size: int, make: Factory, frame: int | None, buf: bytearray,
                  verify: bool = False) -> int:
    """Compressed size; frames of *frame* bytes (sync flush each), or one stream if None.

    With *verify* the output is decompressed on the fly and compared (by CRC) with the input.
    """
    view = memoryview(buf)
    comp = make()
    check = zlib.decompressobj(-15) if verify else None
    out_size, offset, crc_in, crc_out = 0, 0, 0, 0
    step = frame or len(buf)
    while offset < size:
        n = os.preadv(fd, [view[: min(step, size - offset)]], offset)
        chunk = view[:n]
        body = comp.compress(chunk)
        if frame:
            body += comp.flush(zlib.Z_SYNC_FLUSH)
        out_size += len(body)
        if check is not None:
            crc_in = zlib.crc32(chunk, crc_in)
            crc_out = zlib.crc32(check.decompress(body), crc_out)
        offset += n
    tail = comp.flush(zlib.Z_FINISH) if frame is None else b"\x03\x00"
    out_size += len(tail)
    if check is not None:
        crc_out = zlib.crc32(check.decompress(tail), crc_out)
        if crc_in != crc_out or not check.eof:
            raise RuntimeError("round trip failed")
    return out_size


def measure(fd: int, size: int, make: Factory, frame: int | None,
            buf: bytearray) -> tuple[float, int]:
    """CPU seconds and output size of one compression of the file (reads included)."""
    c0 = cpu_seconds()
    out = compress_file(fd, size, make, frame, buf)
    return max(cpu_seconds() - c0, 1e-9), out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-size", default="64MiB")
    parser.add_argument("--frame", default="1MiB", help="input bytes per frame (1MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-agent", action="store_true", help="skip the agent process stage")
    return parser.parse_args(argv)


def curl_with_range(url: str, size: int) -> tuple[int, int, float]:
    """(status, bytes received, seconds) of a ``Range: bytes=0-(size-1)`` download."""
    argv = ["curl", "-s", "-o", "/dev/null", "-H", f"Range: bytes=0-{size - 1}",
            "-w", "%{http_code} %{size_download}", url]
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    status, received = out.stdout.split()
    return int(status), int(float(received)), elapsed


def agent_stage(path: Path, size: int, rounds: int) -> dict[str, Any]:
    """The log through a real agent: frames, a stored range download and a plain one."""
    require_curl()
    modes = {"frames (compress=deflate, Range)": ("?compress=deflate", True, 200),
             "stored Range (206, digests)": ("", True, 206),
             "plain (200, no digests)": ("", False, 200)}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    wire: dict[str, int] = {}
    with work_dir("fleetzip-deflate-") as tmp:
        agent = agent_server(tmp, path.parent, path.name, chunk_size="1MiB")
        with running([agent]):
            names = list(modes)
            for round_no in range(rounds):
                shift = round_no % len(names)
                for mode in names[shift:] + names[:shift]:
                    query, ranged, expect = modes[mode]
                    url = agent.file_url + query
                    before = agent.cpu_seconds()
                    if ranged:
                        status, received, seconds = curl_with_range(url, size)
                    else:
                        result = curl_download(url, 600)
                        status, received, seconds = result.status, result.size, result.seconds
                    if status != expect or (query == "" and received != size):
                        raise SystemExit(f"{mode}: HTTP {status}, {received} bytes")
                    cpu[mode].append(agent.cpu_seconds() - before)
                    wall[mode].append(seconds)
                    wire[mode] = received
    rows, figures = [], {}
    for mode in modes:
        cpu_gib = median(cpu[mode]) / (size / GIB)
        figures[mode] = {"agent_cpu_s_per_gib": round(cpu_gib, 3),
                         "mb_per_agent_cpu_s": round(size / median(cpu[mode]) / 1e6, 1),
                         "wall_mb_s": round(size / median(wall[mode]) / 1e6, 1),
                         "wire_bytes": wire[mode]}
        rows.append([mode, f"{cpu_gib:.2f}", f"{size / median(cpu[mode]) / 1e6:.0f}",
                     f"{size / median(wall[mode]) / 1e6:.0f}", str(wire[mode])])
    print(f"\nagent process, chunk_size 1 MiB, {rounds} rounds, medians; per GiB of source")
    print_table(["mode", "agent CPU s/GiB", "MB/s per agent CPU s", "wall MB/s", "wire bytes"],
                rows)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size, frame = parse_size(args.log_size), parse_size(args.frame)
    path = ensure_log(size)
    warm_page_cache(path)
    variants: dict[str, tuple[Factory, int | None]] = {"zlib-6 stream (seed)": (
        lambda: zlib.compressobj(6, zlib.DEFLATED, -15), None)}
    variants.update({f"{name} frames": (make, frame) for name, make in codecs().items()})
    names = list(variants)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    sizes: dict[str, int] = {}
    buf = bytearray(max(frame, MIB))
    fd = os.open(path, os.O_RDONLY)
    try:
        for name in names:  # untimed: every variant must round-trip before it counts
            compress_file(fd, size, *variants[name], buf, verify=True)
        for round_no in range(args.rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                make, step = variants[name]
                seconds, sizes[name] = measure(fd, size, make, step, buf)
                cpu[name].append(seconds)
    finally:
        os.close(fd)
    ref_name = names[0]
    ref_speed = size / median(cpu[ref_name]) / 1e6
    rows, figures = [], {}
    for name in names:
        speed = size / median(cpu[name]) / 1e6
        figures[name] = {"mb_per_cpu_s": round(speed, 1), "bytes": sizes[name],
                         "size_vs_zlib6": round(sizes[name] / sizes[ref_name], 3),
                         "speed_vs_zlib6": round(speed / ref_speed, 2)}
        rows.append([name, f"{speed:.0f}", f"{speed / ref_speed:.2f}", f"{size / sizes[name]:.2f}",
                     f"{sizes[name] / sizes[ref_name]:.3f}"])
    print(f"log {path.name}: {size // MIB} MiB of access-log lines; frames of {frame // 1024} KiB;"
          f" {args.rounds} rounds, medians; CPU from /proc/self/stat")
    print_table(["variant", "MB/s per core", "x zlib-6", "ratio in/out", "size x zlib-6"], rows)
    agent = None if args.no_agent else agent_stage(path, size, args.rounds)
    print_json_line({"bench": "agent_deflate", "size": size, "frame": frame,
                     "rounds": args.rounds, "figures": figures, "agent": agent,
                     "machine": machine_notes()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
