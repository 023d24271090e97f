"""``fleetzip demo``: a coordinator and three agents on 127.0.0.x, one merged download.

Everything lives in one temporary directory (configs, tokens, sample logs, server logs, the
zip): each service is a child process (``python -m agent`` / ``python -m coordinator``)
stopped by its PID at the end (SIGTERM, then SIGKILL after a grace period), and the
directory is removed unless ``--keep``. Two agents are listed statically in the
coordinator's configuration, the third registers itself. One log grows while the demo runs.
Only 127.0.0.x addresses are bound (127.0.0.1 alone where other loopback addresses cannot
be bound, as on macOS).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from coordinator.client.agents import agents_table, fetch_agents
from coordinator.client.check import parse_thresholds, run_check
from coordinator.client.get import GetResult, Progress, Selection, download
from coordinator.client.http import ClientError, HttpOptions, open_url
from coordinator.client.summary import render_table

COORDINATOR_HOST = "127.0.0.10"
AGENT_HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
NODES = ("web-1", "web-2", "db-1")
STATIC_NODES = 2  # the first two are in the coordinator's config, the last registers itself
START_TIMEOUT = 20.0  # seconds for a service to answer /livez
HEALTHY_TIMEOUT = 20.0  # seconds for the coordinator to see every agent healthy
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
GROW_INTERVAL = 0.1  # seconds between two lines appended to the growing log


def loopback_hosts() -> tuple[str, tuple[str, ...]]:
    """127.0.0.10 and 127.0.0.11-13 where they can be bound, else 127.0.0.1 for all."""
    try:
        with socket.socket() as sock:
            sock.bind((AGENT_HOSTS[0], 0))
    except OSError:
        return "127.0.0.1", ("127.0.0.1",) * len(AGENT_HOSTS)
    return COORDINATOR_HOST, AGENT_HOSTS


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --- sample data -----------------------------------------------------------------------

_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
_PATHS = ("/", "/login", "/api/items", "/api/items/42", "/static/app.js", "/health")


def _log_lines(rng: random.Random, count: int, kind: str, start: float) -> Iterator[str]:
    for i in range(count):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + i * 0.7))
        if kind == "access":
            ip = f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}"
            status = rng.choice((200, 200, 200, 304, 404, 500))
            yield (f'{ip} - - [{stamp}] "GET {rng.choice(_PATHS)} HTTP/1.1" {status} '
                   f"{rng.randint(200, 40000)}\n")
        else:
            yield (f"{stamp} {rng.choice(_LEVELS)} [{kind}] request {rng.randrange(10**6)} "
                   f"took {rng.randint(1, 900)}ms\n")


def _write_log(path: Path, rng: random.Random, count: int, kind: str, start: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        out.writelines(_log_lines(rng, count, kind, start))


def make_sample_logs(root: Path, node: str, seed: int) -> None:
    """Different files per node: web nodes have nginx logs, the db node postgres logs."""
    rng = random.Random(seed)
    start = time.time() - 6 * 3600
    _write_log(root / "app.log", rng, 300 + seed * 50, "app", start)
    if node.startswith("web"):
        _write_log(root / "nginx" / "access.log", rng, 4000 * (seed + 1), "access", start)
        _write_log(root / "nginx" / "error.log", rng, 40, "nginx", start)
    else:
        _write_log(root / "postgresql" / "postgresql.log", rng, 2500, "postgres", start)
        _write_log(root / "postgresql" / "slow-queries.log", rng, 80, "slow", start)


class LogGrower:
    """Appends a line to a log every `GROW_INTERVAL` seconds in a thread, until `stop`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-log-grower", daemon=True)

    def start(self) -> LogGrower:
        self._thread.start()
        return self

    def _run(self) -> None:
        count = 0
        while not self._stop.wait(GROW_INTERVAL):
            count += 1
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with self.path.open("a", encoding="utf-8") as out:
                out.write(f"{stamp} INFO [app] live line {count} while the demo runs\n")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- the services ----------------------------------------------------------------------


@dataclass
class Service:
    """One child process and where it answers."""

    name: str
    module: str
    config: Path
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--config", str(self.config)],
            stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
        )

    def wait_until_up(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ClientError(f"demo: {self.name} exited with code {self.proc.returncode}"
                                  f"{self.tail()}")
            with contextlib.suppress(ClientError), open_url(
                self.url + "/livez", HttpOptions(timeout=1), check_status=False
            ):
                return
            time.sleep(0.05)
        raise ClientError(f"demo: {self.name} did not answer {self.url}/livez in {timeout:g}s"
                          f"{self.tail()}")

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after `STOP_GRACE` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return ("; its log ends:\n  " + "\n  ".join(text)) if text else ""


@dataclass
class Fleet:
    """The demo's coordinator and agents, configured inside *workdir*."""

    workdir: Path
    coordinator: Service | None = None
    agents: list[Service] = field(default_factory=list)

    def configure(self) -> None:
        coordinator_host, agent_hosts = loopback_hosts()
        token = self.workdir / "agent.token"
        token.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
        token.chmod(0o600)
        # Each registering node has its own token; the coordinator lists them by name.
        node_tokens = self.workdir / "registration.tokens"
        coordinator_url = f"http://{coordinator_host}:{free_port(coordinator_host)}"
        static, lines = [], []
        for index, (node, host) in enumerate(zip(NODES, agent_hosts, strict=True)):
            url = f"http://{host}:{free_port(host)}"
            labels = {"role": node.split("-")[0], "env": "demo"}
            register = None
            if index < STATIC_NODES:
                static.append({"name": node, "url": url, "labels": labels})
            else:
                own = self.workdir / f"{node}.register.token"
                own_token = secrets.token_urlsafe(24)
                own.write_text(own_token + "\n", encoding="utf-8")
                own.chmod(0o600)
                lines.append(f"{node} {own_token}\n")
                register = {"coordinator": coordinator_url, "token_file": str(own),
                            "interval": "1s", "advertise_url": url, "labels": labels}
            self.agents.append(self._agent(node, url, token, register, seed=index))
        node_tokens.write_text("".join(lines), encoding="utf-8")
        node_tokens.chmod(0o600)
        self.coordinator = self._coordinator(coordinator_url, static, token, node_tokens)

    def _agent(self, node: str, url: str, token: Path, register: dict[str, Any] | None,
               seed: int) -> Service:
        logs = self.workdir / node / "logs"
        make_sample_logs(logs, node, seed)
        config: dict[str, Any] = {
            "node": node, "listen": url.split("://", 1)[1], "roots": {"logs": str(logs)},
            "token_file": str(token), "shutdown_timeout": "2s", "log_level": "warning",
        }
        if register is not None:
            config["register"] = register
        return Service(node, "agent", self._yaml(f"{node}.yml", config), url,
                       self.workdir / f"{node}.log")

    def _coordinator(self, url: str, static: list[dict[str, Any]], token: Path,
                     node_tokens: Path) -> Service:
        config = {
            "listen": url.split("://", 1)[1], "agents": static,
            "registration": {"enabled": True, "ttl": "5s", "tokens_file": str(node_tokens)},
            "health": {"interval": "1s", "timeout": "2s"},
            "agent_token_file": str(token), "audit_log": str(self.workdir / "audit.log"),
            "log_level": "warning",
        }
        return Service("coordinator", "coordinator", self._yaml("coordinator.yml", config),
                       url, self.workdir / "coordinator.log")

    def _yaml(self, name: str, data: dict[str, Any]) -> Path:
        path = self.workdir / name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    @property
    def services(self) -> list[Service]:
        return ([self.coordinator] if self.coordinator else []) + self.agents

    def start(self) -> None:
        for service in self.services:  # coordinator first: the third agent registers with it
            service.start()
        for service in self.services:
            service.wait_until_up()

    def stop(self) -> None:
        """Agents first (the registered one says goodbye), then the coordinator."""
        for service in reversed(self.services):
            service.stop()

    def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT) -> list[dict[str, Any]]:
        """The coordinator's agent list once every agent is healthy (or when time is up)."""
        assert self.coordinator is not None
        deadline = time.monotonic() + timeout
        agents: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(ClientError):
                agents = fetch_agents(self.coordinator.url, HttpOptions(timeout=2))
                if len(agents) == len(NODES) and all(a.get("health") == "pass" for a in agents):
                    return agents
            time.sleep(0.2)
        return agents


# --- the run ---------------------------------------------------------------------------


def listing(archive: Path) -> str:
    """What ``unzip -l`` shows: size, time and name of every entry."""
    with zipfile.ZipFile(archive) as zf:
        rows = [(info.file_size, _stamp(info.date_time), info.filename)
                for info in zf.infolist()]
    return render_table(("SIZE", "MODIFIED", "NAME"), rows)


def _stamp(date_time: tuple[int, int, int, int, int, int]) -> str:
    year, month, day, hour, minute, _ = date_time
    return f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}"


def run_demo(serve: bool = False, keep: bool = False, out: IO[str] | None = None) -> int:
    """Start the fleet, download one merged zip, show it; the exit code of that download."""
    out = out or sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="fleetzip-demo-"))
    fleet = Fleet(workdir)
    grower: LogGrower | None = None
    try:
        fleet.configure()
        print(f"demo: starting a coordinator and {len(NODES)} agents in {workdir}",
              file=out, flush=True)
        fleet.start()
        grower = LogGrower(workdir / NODES[0] / "logs" / "app.log").start()
        code = _download_and_show(fleet, out)
        if serve:
            code = _serve(fleet, out)
        return code
    finally:
        if grower is not None:
            grower.stop()
        fleet.stop()
        if keep:
            print(f"\ndemo: stopped; kept {workdir} (configs, logs, sample files, zip)", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"\ndemo: stopped; removed {workdir} (--keep keeps it)", file=out)


def _download_and_show(fleet: Fleet, out: IO[str]) -> int:
    assert fleet.coordinator is not None
    url = fleet.coordinator.url
    agents = fleet.wait_healthy()
    print(f"\n$ fleetzip agents -c {url}", file=out)
    print(agents_table(agents), file=out)
    web1 = fleet.agents[0]
    print(f"\n$ fleetzip check {web1.url} --warning time=1", file=out)
    check = run_check(web1.url, HttpOptions(timeout=5), parse_thresholds(["time=1"]), {})
    print(check.line(), file=out)
    print(f"\n$ fleetzip get -c {url} --root logs -o {fleet.workdir}/", file=out, flush=True)
    progress = Progress(enabled=sys.stderr.isatty())
    result: GetResult = download(url, Selection("logs"), str(fleet.workdir) + os.sep,
                                 HttpOptions(timeout=30), progress)
    print(result.report(), file=out)
    print(f"\ndemo: the entries of {result.file.name} ({NODES[0]}/logs/app.log keeps "
          "growing: the zip holds it as it was planned)", file=out)
    print(listing(result.file), file=out)
    return result.exit_code


def _serve(fleet: Fleet, out: IO[str]) -> int:
    assert fleet.coordinator is not None
    print(f"demo: web page at {fleet.coordinator.url}/ — Ctrl-C to stop", file=out, flush=True)
    try:
        while all(s.proc is not None and s.proc.poll() is None for s in fleet.services):
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ndemo: stopping", file=out)
        return 0
    stopped = [s.name for s in fleet.services if s.proc is not None and s.proc.poll() is not None]
    print(f"demo: {', '.join(stopped)} stopped unexpectedly", file=out)
    return 1
