"""CPU cost per GiB of the agent's checksum passes, by CRC-32 implementation and read method.

Chooses what ``agent/checksum.py`` uses. One process measures every variant over the same
page-cached file (random bytes under ``bench/data``), rounds rotated so the machine's noise is
shared; CPU seconds come from ``/proc/self/stat`` (utime + stime, both the kernel's copy and
the hashing), wall seconds from ``perf_counter``. The reference is ``zlib.crc32`` over an mmap
of the file in windows, measured in the same run; every other row is a ratio against it.

Variants:

* ``mmap+<crc>``: the file mapped in ``--window`` windows, the CRC run over each window
  (no copy; the page-table work is the cost besides the CRC);
* ``preadv+<crc>``: ``os.preadv`` into one reused ``--buffer`` (a kernel copy, no allocation);
* ``pread+isal``: ``os.pread`` returning a fresh bytes object per read (the naive loop);
* ``…+sha256`` and ``preadv+isal+sha256``: SHA-256 (hashlib) alone and both in one pass.

``zlib-ng`` rows appear when the ``zlib-ng`` package imports.

    .venv/bin/python bench/agent_checksum.py --size 1GiB --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    GIB,
    MIB,
    ensure_file,
    machine_notes,
    median,
    parse_size,
    print_json_line,
    print_table,
    warm_page_cache,
)

Crc = Callable[[bytes | memoryview, int], int]
Pass = Callable[[int, int], object]  # (fd, size) -> digest(s)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def crc_functions() -> dict[str, Crc]:
    found: dict[str, Crc] = {"zlib": zlib.crc32}
    try:
        from isal import isal_zlib

        found["isal"] = isal_zlib.crc32
    except ImportError:
        print("isal is not installed: its rows are missing", file=sys.stderr)
    try:
        from zlib_ng import zlib_ng

        found["zlib-ng"] = zlib_ng.crc32
    except ImportError:
        print("zlib-ng is not installed: its rows are missing", file=sys.stderr)
    return found


def cpu_seconds() -> float:
    """utime + stime of this process, from /proc/self/stat (fields 14 and 15)."""
    with open("/proc/self/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def mmap_pass(crc: Crc | None, sha: bool, window: int) -> Pass:
    def run(fd: int, size: int) -> object:
        value, digest = 0, hashlib.sha256() if sha else None
        for offset in range(0, size, window):
            length = min(window, size - offset)
            with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=offset) as mapped:
                view = memoryview(mapped)
                if crc is not None:
                    value = crc(view, value)
                if digest is not None:
                    digest.update(view)
                view.release()
        return value, digest.hexdigest() if digest else None

    return run


def preadv_pass(crc: Crc | None, sha: bool, buffer_size: int) -> Pass:
    def run(fd: int, size: int) -> object:
        buf = bytearray(buffer_size)
        whole = memoryview(buf)
        value, digest = 0, hashlib.sha256() if sha else None
        offset = 0
        while offset < size:
            n = os.preadv(fd, [whole[: min(buffer_size, size - offset)]], offset)
            if n <= 0:
                raise RuntimeError("the file got shorter")
            view = whole[:n]
            if crc is not None:
                value = crc(view, value)
            if digest is not None:
                digest.update(view)
            offset += n
        return value, digest.hexdigest() if digest else None

    return run


def pread_pass(crc: Crc, buffer_size: int) -> Pass:
    def run(fd: int, size: int) -> object:
        value, offset = 0, 0
        while offset < size:
            chunk = os.pread(fd, min(buffer_size, size - offset), offset)
            value = crc(chunk, value)
            offset += len(chunk)
        return value, None

    return run


def variants(window: int, buffer_size: int) -> dict[str, Pass]:
    crcs = crc_functions()
    out: dict[str, Pass] = {}
    for name, crc in crcs.items():
        out[f"mmap+{name}"] = mmap_pass(crc, False, window)
    for name, crc in crcs.items():
        out[f"preadv+{name}"] = preadv_pass(crc, False, buffer_size)
    if "isal" in crcs:
        out["pread+isal"] = pread_pass(crcs["isal"], buffer_size)
    out["mmap+sha256"] = mmap_pass(None, True, window)
    out["preadv+sha256"] = preadv_pass(None, True, buffer_size)
    best = crcs.get("isal", zlib.crc32)
    out["preadv+isal+sha256" if "isal" in crcs else "preadv+zlib+sha256"] = preadv_pass(
        best, True, buffer_size
    )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", default="8MiB", help="mmap window (default 8MiB)")
    parser.add_argument("--buffer", default="1MiB", help="preadv buffer (default 1MiB)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size, window, buffer_size = parse_size(args.size), parse_size(args.window), parse_size(
        args.buffer
    )
    if window % mmap.ALLOCATIONGRANULARITY:
        print(f"--window must be a multiple of {mmap.ALLOCATIONGRANULARITY}", file=sys.stderr)
        return 2
    path = ensure_file(f"checksum-{size}.bin", size)
    warm_page_cache(path)
    passes = variants(window, buffer_size)
    names = list(passes)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    results: dict[str, object] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for round_no in range(args.rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                c0, w0 = cpu_seconds(), time.perf_counter()
                results[name] = passes[name](fd, size)
                cpu[name].append(cpu_seconds() - c0)
                wall[name].append(time.perf_counter() - w0)
    finally:
        os.close(fd)
    crc_values = {v[0] for v in results.values() if isinstance(v, tuple) and v[0]}
    if len(crc_values) > 1:
        print(f"CRC values disagree: {results}", file=sys.stderr)
        return 3
    gib = size / GIB
    ref = median(cpu["mmap+zlib"]) / gib
    rows, figures = [], {}
    for name in names:
        cpu_gib, wall_gib = median(cpu[name]) / gib, median(wall[name]) / gib
        figures[name] = {"cpu_s_per_gib": round(cpu_gib, 3), "wall_s_per_gib": round(wall_gib, 3)}
        rows.append([name, f"{cpu_gib:.3f}", f"{wall_gib:.3f}", f"{cpu_gib / ref:.2f}"])
    print(f"file {path.name}: {size // MIB} MiB, page-cached; {args.rounds} rounds, medians")
    print_table(["pass", "CPU s/GiB", "wall s/GiB", "CPU vs mmap+zlib"], rows)
    print_json_line({"bench": "agent_checksum", "size": size, "rounds": args.rounds,
                     "window": window, "buffer": buffer_size, "figures": figures,
                     "machine": machine_notes()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
