"""Shared helpers for the bench scripts: big files, servers started and stopped by PID,
medians, curl downloads and RSS sampling.

Everything here is plain and synchronous on purpose: the measuring side should cost as little
CPU as possible on a small shared machine, and every server is a child process we can kill by
the PID we were given (never by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psutil
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"  # gitignored: big generated files live here
GIB = 1 << 30
MIB = 1 << 20
WRITE_BLOCK = 4 * MIB  # file generation writes 4 MiB at a time: bounded memory


# --------------------------------------------------------------------------- sizes, stats


def die(message: str) -> NoReturn:
    """Usage problem or missing tool: say so on stderr, exit 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def parse_size(text: str) -> int:
    """``1GiB`` → 1073741824 (same units as the config files)."""
    sys.path.insert(0, str(REPO_DIR))
    from common.config import parse_size as parse  # the project's own parser

    return parse(text)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_json_line(data: dict[str, Any]) -> None:
    print("JSON " + json.dumps(data, sort_keys=True), flush=True)


def machine_notes() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m": round(load1, 2),
        "loadavg_5m": round(load5, 2),
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- data files


def ensure_file(name: str, size: int) -> Path:
    """A file of exactly *size* bytes under ``bench/data`` (made once, reused after).

    The content is random 4 MiB blocks (not sparse, not zeros), so reading it really moves
    bytes; it is written block by block so generation needs 4 MiB of memory, whatever *size*.
    """
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / name
    if path.exists() and path.stat().st_size == size:
        return path
    tmp = path.with_suffix(".partial")
    block = os.urandom(WRITE_BLOCK)
    with tmp.open("wb") as out:
        left = size
        while left > 0:
            n = min(left, WRITE_BLOCK)
            out.write(block[:n])
            left -= n
    tmp.replace(path)
    path.chmod(0o644)  # world-readable: nginx workers may run as another user
    return path


def warm_page_cache(path: Path) -> None:
    """Read *path* once so every server is measured from the page cache, not the disk."""
    with path.open("rb") as f:
        while f.read(WRITE_BLOCK):
            pass


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers, whatever the status
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class Server:
    """One server under test, run as a child process and stopped by its PID."""

    name: str
    argv: list[str]
    base_url: str
    file_url: str
    ready_path: str
    log: Path
    cwd: Path = REPO_DIR
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    proc: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> Server:
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **self.env})
        try:
            wait_until_up(self.base_url + self.ready_path, self.proc)
        except Exception:
            self.stop()
            print(f"--- {self.name} log ({self.log}):\n{self.log_tail()}", file=sys.stderr)
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL if it has not gone within *timeout*."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cpu_seconds(self) -> float:
        """user+system CPU of the server and its children (nginx's worker)."""
        try:
            top = psutil.Process(self.pid)
            procs = [top, *top.children(recursive=True)]
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            return total
        except psutil.Error:
            return float("nan")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[Sequence[Server]]:
    """Start *servers* in order; stop every one that started, in reverse, whatever happens."""
    started: list[Server] = []
    try:
        for server in servers:
            started.append(server.start())
        yield servers
    finally:
        for server in reversed(started):
            server.stop()


@contextlib.contextmanager
def work_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the servers


def agent_server(tmp: Path, data_dir: Path, file_name: str, host: str = "127.0.0.1",
                 env: dict[str, str] | None = None, name: str = "agent",
                 source: Path | None = None, **config: Any) -> Server:
    """The fleetzip agent serving *data_dir* as root ``data`` (no token: open).

    *env* is added to the agent's environment only (e.g. ``MALLOC_ARENA_MAX`` experiments).
    *source*: run the agent from another source tree (``git archive COMMIT | tar -x -C DIR``)
    instead of this checkout, to compare commits in one run; *name* tells them apart.
    """
    port = free_port(host)
    cfg = {"node": "bench", "listen": f"{host}:{port}", "roots": {"data": str(data_dir)},
           **config}
    cfg_path = tmp / f"{name}.yml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    base = f"http://{host}:{port}"
    env = dict(env or {})
    if source is not None:
        env["PYTHONPATH"] = str(source)  # first on sys.path: its agent/ and common/ win
    return Server(name, [sys.executable, "-m", "agent", "--config", str(cfg_path)],
                  base, f"{base}/files/data/{file_name}", "/livez", tmp / f"{name}.log",
                  cwd=source or REPO_DIR, env=env)


def parse_sources(items: Sequence[str]) -> dict[str, Path]:
    """``["head=/tmp/head"]`` (repeated ``--agent-from``) → ``{"head": Path("/tmp/head")}``."""
    sources = {}
    for item in items:
        name, eq, directory = item.partition("=")
        path = Path(directory)
        if not eq or not name or not (path / "agent" / "__main__.py").exists():
            die(f"--agent-from wants NAME=DIR with an agent/ package in DIR, got {item!r}")
        sources[name] = path.resolve()
    return sources


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``["A=1", "B=2"]`` (repeated ``--agent-env``) → ``{"A": "1", "B": "2"}``."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (_, eq, _) in zip(items, pairs, strict=True) if not eq]
    if bad:
        die(f"--agent-env wants NAME=VALUE, got {bad[0]!r}")
    return {name: value for name, _, value in pairs}


def static_server(tmp: Path, data_dir: Path, file_name: str, host: str = "127.0.0.1") -> Server:
    """Tornado's own StaticFileHandler (bench/static_server.py) on the same file."""
    port = free_port(host)
    base = f"http://{host}:{port}"
    argv = [sys.executable, str(BENCH_DIR / "static_server.py"), "--root", str(data_dir),
            "--listen", f"{host}:{port}"]
    return Server("tornado-static", argv, base, f"{base}/files/data/{file_name}", "/livez",
                  tmp / "static.log")


NGINX_CONF = """\
{user}worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {sendfile}
    keepalive_timeout 5;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ }}
    default_type application/octet-stream;
    limit_conn_zone $server_port zone=conns:1m;
    limit_conn_status 429;
    server {{
        listen {host}:{port};
        location = /livez {{ return 200 "alive\\n"; }}
        location /files/data/ {{ alias {data}/; {limit} }}
    }}
}}
"""


def nginx_binary() -> str:
    """Path of nginx, or exit 2 with how to install it."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                     else None)
    if path is None:
        die(textwrap.dedent("""\
            nginx is not installed; it is the reference server of this benchmark.
            Install it with:  sudo apt-get install nginx-light   (Debian/Ubuntu)
                         or:  sudo dnf install nginx              (Fedora/RHEL)"""))
    return path


SENDFILE_ON = "sendfile on;\n    tcp_nopush on;"
SENDFILE_OFF = "sendfile off;\n    output_buffers 2 1m;  # read+write 1 MiB pieces"


def nginx_server(tmp: Path, data_dir: Path, file_name: str, workers: str = "1",
                 host: str = "127.0.0.1", name: str = "nginx", sendfile: bool = True,
                 max_conns: int | None = None) -> Server:
    """nginx (``sendfile on`` unless told) from a generated config, everything inside *tmp*.

    *max_conns*: at most that many downloads at once, 429 past it (``limit_conn``), like the
    agent's ``max_concurrent_downloads``.
    """
    binary = nginx_binary()
    prefix = tmp / name
    prefix.mkdir()
    port = free_port(host)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, workers=workers, tmp=prefix, host=host,
                                      port=port, data=data_dir,
                                      limit=f"limit_conn conns {max_conns};" if max_conns else "",
                                      sendfile=SENDFILE_ON if sendfile else SENDFILE_OFF),
                    encoding="utf-8")
    base = f"http://{host}:{port}"
    argv = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf),
            "-g", "daemon off;"]
    return Server(name, argv, base, f"{base}/files/data/{file_name}", "/livez",
                  tmp / f"{name}.log")


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class CurlResult:
    speed: float  # bytes/s, as curl measured it
    size: int
    status: int
    seconds: float


def curl_download(url: str, max_time: float) -> CurlResult:
    """Download *url* to /dev/null with curl; its own speed figure is the measurement."""
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", str(max_time),
            "-w", "%{speed_download} %{size_download} %{http_code}", url]
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=max_time + 10)
    elapsed = time.monotonic() - started
    parts = out.stdout.split()
    if len(parts) != 3:
        raise RuntimeError(f"curl {url} gave {out.stdout!r} (exit {out.returncode})")
    return CurlResult(float(parts[0]), int(float(parts[1])), int(parts[2]), elapsed)


def wget_download(url: str, max_time: float) -> CurlResult:
    """Download *url* to /dev/null with wget (one try, no resume); speed = size / wall time.

    wget prints no figure a script can read, so the process's wall time is the measurement
    (its start-up, ~5 ms, is under 1 % of a 1 GiB download). ``-S`` prints the response
    headers: the status and ``Content-Length`` come from there, and wget exits non-zero
    when the body ends before ``Content-Length`` ("Connection closed at byte …").
    """
    argv = ["wget", "-q", "-S", "-O", "/dev/null", "--tries=1", "--timeout", str(max_time), url]
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=max_time + 10)
    elapsed = time.monotonic() - started
    status, size = 0, 0
    for line in out.stderr.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].startswith("HTTP/"):
            status = int(words[1])
        elif len(words) == 2 and words[0].lower() == "content-length:":
            size = int(words[1])
    if out.returncode != 0:
        size = -1  # cut short or failed: the caller reports it
    return CurlResult(size / elapsed if size > 0 else 0.0, size, status, elapsed)


def require_wget() -> None:
    if shutil.which("wget") is None:
        die("wget is not installed: sudo apt-get install wget")


def require_curl() -> None:
    if shutil.which("curl") is None:
        die("curl is not installed: sudo apt-get install curl")


# --------------------------------------------------------------------------- RSS sampling


class RssSampler:
    """Samples a process's resident set size every *interval* seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - start, self.rss()))
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    @property
    def peak_at(self) -> float:
        """Seconds after sampling began when the peak was first seen."""
        return next((t for t, rss in self.samples if rss == self.peak), 0.0)


# --------------------------------------------------------------------------- profiling


@contextlib.contextmanager
def py_spy(pid: int, out: Path, rate: int = 100) -> Iterator[None]:
    """Sample *pid* with ``py-spy record`` (collapsed stacks in *out*) while the body runs.

    ``--nonblocking``: the target is not paused to be sampled, so it is barely slowed; still,
    figures measured under a profiler are for finding hot spots, not for the record.
    """
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        die("py-spy is not installed: .venv/bin/pip install py-spy")
    time.sleep(1.0)  # py-spy cannot read a process that has only just started
    proc = subprocess.Popen([binary, "record", "--nonblocking", "--format", "raw",
                             "--rate", str(rate), "-o", str(out), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if not out.exists():
            print(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}",
                  file=sys.stderr)


def summarise_profile(path: Path, top: int = 15) -> list[tuple[str, float, float]]:
    """(frame, self %, inclusive %) of the busiest frames in a py-spy ``raw`` file."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    ranked = sorted(own, key=lambda f: own[f], reverse=True)[:top]
    return [(f, 100 * own[f] / total, 100 * inclusive[f] / total) for f in ranked] if total \
        else []
