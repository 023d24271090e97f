"""ansible/site.yml, run for real: a local-connection converge into a temporary prefix.

Three agents (node1..node3 on 127.0.0.21..23) and a coordinator (127.0.0.20) are localhost
aliases with ``ansible_connection=local`` and the service manager off, so the roles install
fleetzip into one virtualenv per host below the prefix (from a wheelhouse, as on an
air-gapped node), write the configs, token files and units, and start nothing. The test
then starts what the roles installed, from the configs they wrote, and downloads a merged
zip through the coordinator. A second run must change nothing; bad variables must fail
with the sentence the role promises; the rendered units must pass ``systemd-analyze
verify``; ``ansible-lint`` (production profile) and ``--syntax-check`` must be clean.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from coordinator.users import hash_password
from tests.support import free_port, http_get, require_tool, wait_until_up, write_yaml

# The module's fixtures build a wheelhouse and run whole playbooks: minutes on a busy 2-core
# machine, past pytest's default 300 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
AGENTS = {"node1": "127.0.0.21", "node2": "127.0.0.22", "node3": "127.0.0.23"}
COORDINATOR_IP = "127.0.0.20"
AGENT_TOKEN = "agent-secret-0123456789"
NODE3_REGISTER_TOKEN = "node3-own-registration-token-42"  # node3's own, not the agent token
CLIENT_TOKEN = "client-secret-0123456789"
USER, PASSWORD = "alice", "correct horse battery staple"
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def tool(name: str) -> str:
    """A command installed next to this Python (the project venv), else on PATH (CI: must be)."""
    beside = VENV_BIN / name
    if beside.exists():
        return str(beside)
    return require_tool(name)


def tool_env(tmp: Path) -> dict[str, str]:
    """Environment for ansible: no colour, its temp and home dirs inside *tmp*."""
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_FORKS": "4",
    }


def run_playbook(inventory: Path, tmp: Path, *args: str,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), str(ANSIBLE_DIR / "site.yml"), *args],
        cwd=tmp, env=tool_env(tmp), capture_output=True, text=True, timeout=timeout,
    )


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """host → {ok, changed, unreachable, failed} from the PLAY RECAP."""
    recap = output[output.rindex("PLAY RECAP"):]
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP_RE.finditer(recap)
    }


# -- the wheelhouse: the project's wheel (per session) plus its dependencies (cached) -------


def runtime_requirements() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def fill_dependency_cache(cache: Path, requirements: list[str]) -> None:
    """Wheels of *requirements* in *cache*: offline when cached, else from the index."""
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
           "-d", str(cache), *requirements]
    offline = subprocess.run([*pip, "--no-index", "--find-links", str(cache)],
                             capture_output=True, text=True, timeout=120)
    if offline.returncode == 0:
        return
    online = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert online.returncode == 0, f"pip download failed:\n{online.stderr[-3000:]}"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    house = tmp_path_factory.mktemp("wheelhouse")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(house),
         str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, f"building the fleetzip wheel failed:\n{build.stderr[-3000:]}"
    store = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache = (store.mkdir("fleetzip-dependency-wheels") if store is not None
             else tmp_path_factory.mktemp("dependency-wheels"))
    fill_dependency_cache(cache, runtime_requirements())
    for wheel in cache.glob("*.whl"):
        shutil.copy2(wheel, house / wheel.name)
    return house


def wheel_version(house: Path) -> str:
    (wheel,) = house.glob("fleetzip-*.whl")
    return wheel.name.split("-")[1]


# -- the deployment ------------------------------------------------------------------------


@dataclass
class Deployment:
    tmp: Path
    inventory: Path
    first_run: subprocess.CompletedProcess[str]
    agent_ports: dict[str, int]
    coordinator_port: int

    def prefix(self, host: str) -> Path:
        return self.tmp / "prefix" / host

    def data(self, host: str) -> Path:
        return self.tmp / "data" / host / "logs"

    @property
    def coordinator_url(self) -> str:
        return f"http://{COORDINATOR_IP}:{self.coordinator_port}"

    def agent_url(self, host: str) -> str:
        return f"http://{AGENTS[host]}:{self.agent_ports[host]}"


def common_vars(tmp: Path, house: Path) -> dict[str, object]:
    """Variables of every host: local connection, a prefix per host, no service manager."""
    prefix = f"{tmp}/prefix/{{{{ inventory_hostname }}}}"
    version = wheel_version(house)
    values: dict[str, object] = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "fleetzip_become": False,
    }
    for role in ("agent", "coordinator"):
        values |= {
            f"fleetzip_{role}_prefix": prefix,
            f"fleetzip_{role}_service_manager": "none",
            f"fleetzip_{role}_python": sys.executable,
            f"fleetzip_{role}_version": version,
        }
    # Both ways a wheelhouse reaches a node: the agents find it already there (pre-staged,
    # as on an air-gapped node with a shared mount); the coordinator gets a copy.
    values["fleetzip_agent_wheelhouse_dir"] = str(house)
    values["fleetzip_coordinator_wheelhouse_src"] = str(house)
    return values


def write_inventory(tmp: Path, house: Path, agent_ports: dict[str, int],
                    coordinator_port: int) -> Path:
    coordinator = f"http://{COORDINATOR_IP}:{coordinator_port}"
    agents = {
        host: {"ansible_host": ip, "fleetzip_agent_listen": f"{ip}:{agent_ports[host]}",
               "fleetzip_agent_labels": {"rack": f"r{index % 2}"}}
        for index, (host, ip) in enumerate(AGENTS.items())
    }
    # node3 also announces itself: the role renders the register: section and its own token,
    # and the coordinator role pairs that token with node3's name in registration.tokens.
    agents["node3"] |= {"fleetzip_agent_register_coordinator": coordinator,
                        "fleetzip_agent_register_token": NODE3_REGISTER_TOKEN,
                        "fleetzip_agent_register_interval": "2s"}
    group_vars = {
        **common_vars(tmp, house),
        "fleetzip_agent_roots": {"logs": f"{tmp}/data/{{{{ inventory_hostname }}}}/logs"},
        "fleetzip_agent_tokens": [AGENT_TOKEN],
        "fleetzip_coordinator_agent_token": AGENT_TOKEN,
        "fleetzip_coordinator_tokens": [CLIENT_TOKEN],
        "fleetzip_coordinator_users": [
            {"name": USER, "password_hash": hash_password(PASSWORD, iterations=1000)}],
        "fleetzip_coordinator_health_interval": "1s",
    }
    inventory = {"all": {"vars": group_vars, "children": {
        "fleetzip_agents": {"hosts": agents},
        "fleetzip_coordinator": {"hosts": {"coordinator": {
            "ansible_host": COORDINATOR_IP,
            "fleetzip_coordinator_listen": f"{COORDINATOR_IP}:{coordinator_port}",
        }}},
    }}}
    return write_yaml(tmp / "inventory.yml", inventory)


def make_sample_files(tmp: Path) -> None:
    for host in AGENTS:
        logs = tmp / "data" / host / "logs"
        (logs / "app").mkdir(parents=True)
        (logs / "app" / "service.log").write_text(f"{host}: started\n{host}: ok\n")
        (logs / "boot.log").write_bytes(host.encode() * 1000)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Deployment:
    tmp = tmp_path_factory.mktemp("site")
    make_sample_files(tmp)
    agent_ports = {host: free_port(ip) for host, ip in AGENTS.items()}
    coordinator_port = free_port(COORDINATOR_IP)
    inventory = write_inventory(tmp, wheelhouse, agent_ports, coordinator_port)
    first = run_playbook(inventory, tmp)
    assert first.returncode == 0, f"site.yml failed:\n{first.stdout[-6000:]}\n{first.stderr}"
    return Deployment(tmp, inventory, first, agent_ports, coordinator_port)


@contextlib.contextmanager
def service(command: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run *command* until the block ends; stopped by its PID (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        # cwd: a neutral directory, so nothing of this checkout can shadow the installed code.
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        try:
            wait_until_up(ready_url, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_ready(url: str, timeout: float = 30.0) -> dict[str, object]:
    """The JSON of *url* once it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = http_get(url)
        if status == 200:
            return dict(json.loads(body))
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still answers {status}: {body!r}")
        time.sleep(0.2)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def download(url: str, token: str, target: Path) -> int:
    """Stream *url* into *target*; the HTTP status."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response, target.open("wb") as out:
        shutil.copyfileobj(response, out, 64 * 1024)
        return int(response.status)


# -- the tests -----------------------------------------------------------------------------


def test_roles_install_services_that_serve_a_merged_zip(deployment: Deployment) -> None:
    tmp, logs = deployment.tmp, deployment.tmp / "logs"
    logs.mkdir()
    with contextlib.ExitStack() as stack:
        for host in AGENTS:
            prefix = deployment.prefix(host)
            stack.enter_context(service(
                [str(prefix / "opt/fleetzip-agent/bin/fleetzip-agent"),
                 "--config", str(prefix / "etc/fleetzip-agent/agent.yml")],
                logs / f"{host}.log", deployment.agent_url(host) + "/livez"))
        prefix = deployment.prefix("coordinator")
        stack.enter_context(service(
            [str(prefix / "opt/fleetzip-coordinator/bin/fleetzip-coordinator"),
             "--config", str(prefix / "etc/fleetzip-coordinator/coordinator.yml")],
            logs / "coordinator.log", deployment.coordinator_url + "/livez"))

        # The agents demand the token the roles wrote; the coordinator has it.
        status, _, _ = http_get(deployment.agent_url("node1") + "/list/logs")
        assert status == 401
        ready = wait_ready(deployment.coordinator_url + "/readyz")
        assert ready["agents_total"] == 3

        # The users file the role wrote lets alice in with HTTP Basic, and nobody else.
        agents_url = deployment.coordinator_url + "/api/agents"
        status, _, body = http_get(agents_url, {"Authorization": basic(USER, PASSWORD)})
        assert status == 200
        assert {agent["name"] for agent in json.loads(body)["agents"]} == set(AGENTS)
        assert http_get(agents_url, {"Authorization": basic(USER, "wrong")})[0] == 401
        assert http_get(agents_url)[0] == 401

        # node3 registers with its own token (a heartbeat: it is in agents_file too); that
        # token speaks for node3 only
        register = deployment.coordinator_url + "/api/agents/register"
        for token, name, expected in ((NODE3_REGISTER_TOKEN, "node3", 200),
                                      (NODE3_REGISTER_TOKEN, "node1", 403),
                                      (AGENT_TOKEN, "node3", 401)):
            body = json.dumps({"name": name, "url": deployment.agent_url(name)}).encode()
            request = urllib.request.Request(register, data=body, method="POST", headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == expected, (token, name, status)

        archive = tmp / "merged.zip"
        status = download(deployment.coordinator_url + "/api/download?root=logs",
                          CLIENT_TOKEN, archive)
        assert status == 200

    with zipfile.ZipFile(archive) as merged:
        assert merged.testzip() is None
        names = set(merged.namelist())
        for host in AGENTS:
            assert merged.read(f"{host}/logs/app/service.log") == \
                (deployment.data(host) / "app/service.log").read_bytes()
            assert merged.read(f"{host}/logs/boot.log") == host.encode() * 1000
        assert {"_fleetzip/status.json", "_fleetzip/SHA256SUMS"} <= names
        status_json = json.loads(merged.read("_fleetzip/status.json"))
    states = {node["node"]: node["state"] for node in status_json["nodes"]}
    assert states == dict.fromkeys(AGENTS, "ok")


def test_agents_file_lists_exactly_the_inventory_group(deployment: Deployment) -> None:
    path = deployment.prefix("coordinator") / "etc/fleetzip-coordinator/agents.yml"
    groups = yaml.safe_load(path.read_text())
    assert groups == [
        {"targets": [deployment.agent_url(host)],
         "labels": {"rack": f"r{index % 2}", "node": host}}
        for index, host in enumerate(AGENTS)
    ]


def test_secrets_are_private_files(deployment: Deployment) -> None:
    secrets = [
        deployment.prefix("node1") / "etc/fleetzip-agent/tokens",
        deployment.prefix("node3") / "etc/fleetzip-agent/register.token",
        deployment.prefix("coordinator") / "etc/fleetzip-coordinator/agent.token",
        deployment.prefix("coordinator") / "etc/fleetzip-coordinator/tokens",
        deployment.prefix("coordinator") / "etc/fleetzip-coordinator/users",
    ]
    for path in secrets:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert (deployment.prefix("node1") / "etc/fleetzip-agent/tokens").read_text() == \
        AGENT_TOKEN + "\n"
    assert (deployment.prefix("node3") / "etc/fleetzip-agent/register.token").read_text() == \
        NODE3_REGISTER_TOKEN + "\n"
    # only node3 registers: the coordinator's registration tokens pair it with its name
    registration = deployment.prefix("coordinator") / \
        "etc/fleetzip-coordinator/registration.tokens"
    assert registration.stat().st_mode & 0o777 == 0o600
    lines = [line for line in registration.read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines == [f"node3 {NODE3_REGISTER_TOKEN}"]
    config = yaml.safe_load(
        (deployment.prefix("coordinator") / "etc/fleetzip-coordinator/coordinator.yml").read_text())
    assert config["registration"]["tokens_file"] == str(registration)
    assert not (deployment.prefix("node1") / "etc/fleetzip-agent/register.token").exists()


def test_second_run_changes_nothing(deployment: Deployment) -> None:
    first = play_recap(deployment.first_run.stdout)
    assert set(first) == {*AGENTS, "coordinator"}
    assert all(counts["changed"] > 0 for counts in first.values())

    second = run_playbook(deployment.inventory, deployment.tmp)
    assert second.returncode == 0, second.stdout[-6000:]
    recap = play_recap(second.stdout)
    assert set(recap) == {*AGENTS, "coordinator"}
    for host, counts in recap.items():
        assert counts["changed"] == 0 and counts["failed"] == 0, (host, second.stdout[-6000:])


def build_wheel_with_version(tmp: Path, version: str) -> Path:
    """A fleetzip wheel of this source tree that says it is *version*, in a new directory."""
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("agent", "coordinator", "common"):
        shutil.copytree(REPO / part, source / part, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    init = source / "common" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"',
                           init.read_text()))
    out = tmp / "new-wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = out.glob("fleetzip-*.whl")
    return wheel


def installed_version(deployment: Deployment, host: str) -> str:
    python = deployment.prefix(host) / "opt/fleetzip-agent/bin/python"
    return subprocess.run(
        [str(python), "-I", "-c", "import importlib.metadata as m; print(m.version('fleetzip'))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()


def test_version_change_upgrades_and_rolls_back(deployment: Deployment, wheelhouse: Path,
                                                tmp_path: Path) -> None:
    old = wheel_version(wheelhouse)
    new = f"{old}.post1"
    house = tmp_path / "wheelhouse"
    shutil.copytree(wheelhouse, house)
    shutil.copy2(build_wheel_with_version(tmp_path, new), house)
    assert installed_version(deployment, "node1") == old

    for version in (new, old):  # upgrade, then roll back
        run = run_playbook(deployment.inventory, deployment.tmp, "--limit", "node1",
                           "-e", f"fleetzip_agent_version={version}",
                           "-e", f"fleetzip_agent_wheelhouse_dir={house}")
        assert run.returncode == 0, run.stdout[-6000:]
        assert play_recap(run.stdout)["node1"]["changed"] == 1, run.stdout[-6000:]
        assert "RUNNING HANDLER [fleetzip_agent : Restart fleetzip agent]" in run.stdout
        assert installed_version(deployment, "node1") == version


def rendered_units(deployment: Deployment) -> list[Path]:
    return [
        *(deployment.prefix(host) / "etc/systemd/system/fleetzip-agent.service"
          for host in AGENTS),
        deployment.prefix("coordinator") / "etc/systemd/system/fleetzip-coordinator.service",
    ]


def test_units_are_hardened(deployment: Deployment) -> None:
    for unit in rendered_units(deployment):
        text = unit.read_text()
        for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                          "ProtectHome=yes", "SystemCallFilter=@system-service",
                          "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                          "Restart=on-failure"):
            assert directive in text.splitlines(), (unit, directive)
        assert re.search(r"^CapabilityBoundingSet=$", text, re.MULTILINE), unit
    node1 = rendered_units(deployment)[0].read_text()
    assert f'ReadOnlyPaths="{deployment.data("node1")}"' in node1.splitlines()
    venv = deployment.prefix("node1") / "opt/fleetzip-agent/bin/fleetzip-agent"
    assert f"ExecStart={venv} --config " in node1


def test_systemd_analyze_verify_accepts_the_units(deployment: Deployment) -> None:
    analyze = require_tool("systemd-analyze")
    units = rendered_units(deployment)
    result = subprocess.run([analyze, "verify", *map(str, units)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    complaints = [line for line in output.splitlines()
                  if any(unit.name in line or str(unit) in line for unit in units)]
    assert result.returncode == 0 and not complaints, output


def bad_inventory(tmp: Path, house: Path) -> Path:
    """One host per mistake; each must fail with its own sentence."""
    port = free_port(COORDINATOR_IP)
    agents = {
        "missing-root": {"fleetzip_agent_listen": f"127.0.0.21:{port}",
                         "fleetzip_agent_roots": {"logs": f"{tmp}/no/such/dir"}},
        "bad-listen": {"fleetzip_agent_listen": "127.0.0.22"},
        "bad-manager": {"fleetzip_agent_listen": f"127.0.0.23:{port}",
                        "fleetzip_agent_service_manager": "upstart"},
        "bad-node": {"fleetzip_agent_listen": f"127.0.0.24:{port}",
                     "fleetzip_agent_node": "no spaces allowed"},
        "no-register-token": {"fleetzip_agent_listen": f"127.0.0.25:{port}",
                              "fleetzip_agent_register_coordinator": "http://127.0.0.20:1"},
    }
    (tmp / "ok").mkdir()
    inventory = {"all": {"vars": {**common_vars(tmp, house),
                                  "fleetzip_agent_roots": {"logs": str(tmp / "ok")}},
                         "children": {"fleetzip_agents": {"hosts": agents},
                                      "fleetzip_coordinator": {"hosts": {}}}}}
    return write_yaml(tmp / "bad.yml", inventory)


def test_bad_variables_fail_early_with_a_clear_sentence(tmp_path: Path, wheelhouse: Path) -> None:
    result = run_playbook(bad_inventory(tmp_path, wheelhouse), tmp_path, timeout=120)
    assert result.returncode != 0
    out = result.stdout
    failures = dict(re.findall(r"^(?:fatal|failed): \[([^\]]+)\].*? => (.*)$", out, re.MULTILINE))
    assert set(failures) == {"missing-root", "bad-listen", "bad-manager", "bad-node",
                             "no-register-token"}, out
    assert f"the directory {tmp_path}/no/such/dir does not exist" in failures["missing-root"]
    assert "is not a listen address" in failures["bad-listen"]
    assert "fleetzip_agent_service_manager" in failures["bad-manager"]
    assert "systemd, none" in failures["bad-manager"]  # argument_specs choices
    assert "not a valid node name" in failures["bad-node"]
    assert "fleetzip_agent_register_token is empty" in failures["no-register-token"]
    # Nothing was installed: the checks run before any change.
    assert not (tmp_path / "prefix").exists()


def service_user_fixtures(base: Path) -> dict[str, Path]:
    """Roots and TLS files with modes that the service user can or cannot read.

    They live outside /tmp because the preflight refuses /tmp paths for the systemd unit
    (PrivateTmp would hide them).
    """
    shutil.rmtree(base, ignore_errors=True)
    paths = {"private": base / "private", "group": base / "group", "open": base / "open",
             "cert": base / "tls.crt", "private-key": base / "private.key",
             "group-key": base / "group.key"}
    for name, mode in (("private", 0o700), ("group", 0o750), ("open", 0o755)):
        paths[name].mkdir(parents=True)
        paths[name].chmod(mode)
    for name, mode in (("cert", 0o644), ("private-key", 0o600), ("group-key", 0o640)):
        paths[name].write_text("not checked by the preflight\n")
        paths[name].chmod(mode)
    return paths


def outside_tmp_dir() -> Path:
    """A fresh directory that is not below /tmp or /var/tmp, wherever the checkout is (CI may
    clone into /tmp): /dev/shm when it is writable, else the home directory."""
    for parent in (Path("/dev/shm"), Path.home()):
        if parent.is_dir() and os.access(parent, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="fleetzip-preflight-", dir=parent))
    raise RuntimeError("no writable directory outside /tmp for the preflight fixtures")


def test_preflight_checks_what_the_service_user_can_read(
        tmp_path: Path, wheelhouse: Path, request: pytest.FixtureRequest) -> None:
    """Service manager systemd, only the preflight (tag-less `always` tasks) runs.

    The service user (fleetzip-agent, not the owner of the files) reads through its group
    (fleetzip_agent_extra_groups) or the others' bits, as POSIX says.
    """
    base = outside_tmp_dir()
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    paths = service_user_fixtures(base / "files")
    group = grp.getgrgid(os.getgid()).gr_name
    tls = {"fleetzip_agent_tls_cert": str(paths["cert"])}
    hosts = {
        "private-root": {"fleetzip_agent_roots": {"logs": str(paths["private"])}},
        "group-root": {"fleetzip_agent_roots": {"logs": str(paths["group"])},
                       "fleetzip_agent_extra_groups": [group]},
        "private-key": {**tls, "fleetzip_agent_tls_key": str(paths["private-key"])},
        "group-key": {**tls, "fleetzip_agent_tls_key": str(paths["group-key"]),
                      "fleetzip_agent_extra_groups": [group]},
    }
    group_vars = {**common_vars(tmp_path, wheelhouse),
                  "fleetzip_agent_service_manager": "systemd",
                  "fleetzip_agent_roots": {"logs": str(paths["open"])}}
    inventory = write_yaml(tmp_path / "inventory.yml", {"all": {"vars": group_vars, "children": {
        "fleetzip_agents": {"hosts": hosts}, "fleetzip_coordinator": {"hosts": {}}}}})
    # A tag that no task has: only the preflight (tagged always) runs; nothing is changed.
    result = run_playbook(inventory, tmp_path, "--tags", "preflight-only", timeout=120)
    recap = play_recap(result.stdout)
    assert {host for host, counts in recap.items() if counts["failed"]} == \
        {"private-root", "private-key"}, result.stdout[-6000:]
    assert all(counts["changed"] == 0 for counts in recap.values())
    out = result.stdout
    assert (f"the directory {paths['private']} cannot be read by the service user "
            "fleetzip-agent") in out
    assert f"The TLS file {paths['private-key']} on private-key" in out
    assert "make it readable by that user or its group" in out
    assert not (tmp_path / "prefix").exists()


def test_syntax_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "-i",
         str(ANSIBLE_DIR / "inventory/example.yml"), str(ANSIBLE_DIR / "site.yml")],
        cwd=tmp_path, env=tool_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    result = subprocess.run(
        [tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor",
         str(ANSIBLE_DIR)],
        cwd=REPO, env=tool_env(tmp_path), capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_argument_specs_are_in_step_with_defaults_and_documented() -> None:
    readme = (ANSIBLE_DIR / "README.md").read_text()
    for role in ("fleetzip_agent", "fleetzip_coordinator"):
        base = ANSIBLE_DIR / "roles" / role
        defaults = yaml.safe_load((base / "defaults/main.yml").read_text())
        specs = yaml.safe_load((base / "meta/argument_specs.yml").read_text())
        options = specs["argument_specs"]["main"]["options"]
        assert set(options) == set(defaults), role
        for name, value in defaults.items():
            assert name.startswith(role + "_"), name
            assert options[name]["default"] == value, name
            assert options[name].get("description"), name
            assert f"`{name}`" in readme, f"{name} is not in ansible/README.md"

