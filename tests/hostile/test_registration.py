"""Issue 11, S1 and S7: who may register an agent, at which address — against real
coordinator processes.

* S1: registration is off unless per-node tokens are configured (and the coordinator says
  so at start); a registered URL is ``scheme://host:port`` only, optionally limited to
  ``registration.allowed_networks``; a URL ending in ``#`` no longer makes the proxy fetch
  an internal URL (readable SSRF).
* S7: a node's token registers and deletes only that node's name.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.agentapi import agent_url
from tests.faults.harness import Fleet
from tests.hostile.hostile_agent import Answer, HostileAgent
from tests.hostile.rawhttp import RawAnswer, assert_clear_error, raw_request
from tests.support import write_yaml

CLIENT_TOKEN = "client-token-" + "c" * 20
AGENT_TOKEN = "agent-token-" + "a" * 20  # what the coordinator sends to agents
NODE_TOKENS = {"n1": "n1-registration-token-" + "1" * 10,
               "n2": "n2-registration-token-" + "2" * 10}
SECRET = b"INTERNAL-ONLY-SECRET-7f3a"


class Coordinator:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        host, port = fleet.url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)

    def call(self, path: str, *, method: str = "GET", body: Any = None,
             token: str | None = CLIENT_TOKEN) -> RawAnswer:
        headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
        data = json.dumps(body).encode() if body is not None else b""
        if data:
            headers.append((b"Content-Type", b"application/json"))
        return raw_request(self.host, self.port, path.encode(), method=method.encode(),
                           headers=headers, body=data)

    def register(self, name: str, url: str, token: str | None) -> RawAnswer:
        return self.call("/api/agents/register", method="POST", token=token,
                         body={"name": name, "url": url, "version": "1"})

    def deregister(self, name: str, token: str | None) -> RawAnswer:
        return self.call(f"/api/agents/{name}", method="DELETE", token=token)

    def agents(self) -> dict[str, dict[str, Any]]:
        answer = self.call("/api/agents")
        assert answer.status == 200, answer.raw[:300]
        return {a["name"]: a for a in answer.json()["agents"]}


@contextlib.contextmanager
def start(tmp: Path, **config: Any) -> Iterator[Coordinator]:
    token_file = tmp / "client-token"
    token_file.write_text(CLIENT_TOKEN + "\n")
    agent_token = tmp / "agent-token"
    agent_token.write_text(AGENT_TOKEN + "\n")
    fleet = Fleet(tmp)
    try:
        fleet.start_coordinator(token_file=str(token_file), agent_token_file=str(agent_token),
                                **config)
        yield Coordinator(fleet)
    finally:
        fleet.close()


def tokens_file(tmp: Path) -> str:
    path = tmp / "registration-tokens"
    path.write_text("# name token\n" + "".join(f"{n} {t}\n" for n, t in NODE_TOKENS.items()))
    return str(path)


@pytest.fixture(scope="module")
def open_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """Registration on (per-node tokens for n1 and n2), any network."""
    tmp = tmp_path_factory.mktemp("registration")
    with start(tmp, registration={"tokens_file": tokens_file(tmp)}) as coordinator:
        yield coordinator


def assert_refused(answer: RawAnswer, status: int, *words: str) -> str:
    assert answer.status == status, answer.raw[:400]
    assert_clear_error(answer)
    message = str(answer.json()["error"]["message"])
    for word in words:
        assert word in message, message
    return message


# -- S1: closed unless configured ------------------------------------------------------------


def test_registration_is_off_by_default_and_says_so_at_start(tmp_path: Path) -> None:
    """The reported attack: no agent credential configured, anyone registered any URL. Now
    no token (not even the one the coordinator sends to agents) opens the routes."""
    with start(tmp_path) as coordinator:
        for token in (None, AGENT_TOKEN, CLIENT_TOKEN, "x"):
            answer = coordinator.register("evil", "http://127.0.0.9:80", token)
            assert_refused(answer, 403, "registration is off", "registration.tokens_file")
            assert answer.json()["error"]["code"] == "registration_off"
            assert_refused(coordinator.deregister("evil", token), 403, "registration is off")
        assert "evil" not in coordinator.agents()
        log = coordinator.fleet.coordinator.output()  # type: ignore[union-attr]
        assert "agent registration is off: no registration.tokens_file is set" in log, log


def test_registration_disabled_explicitly_stays_off(tmp_path: Path) -> None:
    registration = {"enabled": False, "tokens_file": tokens_file(tmp_path)}
    with start(tmp_path, registration=registration) as coordinator:
        answer = coordinator.register("n1", "http://127.0.0.9:80", NODE_TOKENS["n1"])
        assert_refused(answer, 403, "registration.enabled is false")
        log = coordinator.fleet.coordinator.output()  # type: ignore[union-attr]
        assert "agent registration is off: registration.enabled is false" in log


def test_start_log_says_registration_is_on_and_for_whom(open_coordinator: Coordinator) -> None:
    log = open_coordinator.fleet.coordinator.output()  # type: ignore[union-attr]
    assert "agent registration is on for 2 node name(s)" in log, log
    assert "addresses allowed: any network" in log


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.9:8701/secret", ["path"]),
    ("http://127.0.0.9:8701/secret#", ["fragment"]),
    ("http://127.0.0.9:8701#", ["fragment"]),
    ("http://127.0.0.9:8701?x=1", ["query"]),
    ("http://user:pw@127.0.0.9:8701", ["user info"]),
    ("http://127.0.0.9", ["port"]),
    ("http://127.0.0.9:0", ["port"]),
    ("http://127.0.0.9:70000", ["port"]),
    ("http://2130706433:8701", ["IPv4"]),  # 127.0.0.1 spelled as one number
    ("http://0x7f.1:8701", ["IPv4"]),
    ("gopher://127.0.0.9:70", ["http"]),
    ("file:///etc/passwd", ["http"]),
    ("http://[::1%25lo]:8701", ["zone"]),
    ("http://0.0.0.0:8701", ["one host"]),
])
def test_registered_url_is_scheme_host_port_only(open_coordinator: Coordinator, url: str,
                                                 words: list[str]) -> None:
    answer = open_coordinator.register("n1", url, NODE_TOKENS["n1"])
    message = assert_refused(answer, 400, *words)
    assert message.startswith("url: "), message
    assert "n1" not in open_coordinator.agents()


def test_registered_url_is_stored_in_canonical_form(open_coordinator: Coordinator) -> None:
    answer = open_coordinator.register("n2", "HTTP://Node-2.Example.COM:8701/",
                                       NODE_TOKENS["n2"])
    assert answer.status == 200, answer.raw[:300]
    try:
        assert open_coordinator.agents()["n2"]["url"] == "http://node-2.example.com:8701"
    finally:
        assert open_coordinator.deregister("n2", NODE_TOKENS["n2"]).status == 200


@pytest.mark.parametrize(("url", "ok", "word"), [
    ("http://127.0.0.20:8701", True, ""),
    ("http://[::ffff:127.0.0.21]:8701", True, ""),  # IPv4-mapped: checked as 127.0.0.21
    ("http://127.0.0.99:8701", False, "not in registration.allowed_networks"),
    ("http://10.0.0.1:8701", False, "not in registration.allowed_networks"),
    ("http://[::1]:8701", False, "not in registration.allowed_networks"),
    ("http://[::ffff:127.0.0.99]:8701", False, "not in registration.allowed_networks"),
    ("http://localhost:8701", False, "is a name"),  # names resolve later: refused
])
def test_allowed_networks(tmp_path: Path, url: str, ok: bool, word: str) -> None:
    registration = {"tokens_file": tokens_file(tmp_path), "allowed_networks": ["127.0.0.16/28"]}
    with start(tmp_path, registration=registration) as coordinator:
        answer = coordinator.register("n1", url, NODE_TOKENS["n1"])
        if ok:
            assert answer.status == 200, answer.raw[:300]
            assert "n1" in coordinator.agents()
        else:
            assert_refused(answer, 400, "url: ", word)
            assert "n1" not in coordinator.agents()


def test_a_bad_allowed_network_stops_the_coordinator(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yml", {"registration": {
        "tokens_file": tokens_file(tmp_path), "allowed_networks": ["10.0.0.1/8"]}})
    run = subprocess.run([sys.executable, "-m", "coordinator", "--config", str(config),
                          "--check-config"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "registration.allowed_networks[0]" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(("content", "problem"), [
    ("n1 short\n", "shorter than 16"),
    (f"n1 {NODE_TOKENS['n1']}\nn2 {NODE_TOKENS['n1']}\n", "same token"),
    (f"../x {NODE_TOKENS['n1']}\n", "invalid node name"),
    (f"n1 {NODE_TOKENS['n1']} extra\n", "expected 'name token'"),
    ("# nothing\n", "no 'name token' line"),
])
def test_a_bad_tokens_file_stops_the_coordinator(tmp_path: Path, content: str,
                                                  problem: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    config = write_yaml(tmp_path / "c.yml", {"registration": {"tokens_file": str(path)}})
    run = subprocess.run([sys.executable, "-m", "coordinator", "--config", str(config),
                          "--check-config"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "registration.tokens_file" in run.stderr and problem in run.stderr, run.stderr
    assert NODE_TOKENS["n1"] not in run.stderr  # a secret is never echoed


# -- S1: the '#' SSRF ------------------------------------------------------------------------


def test_a_fragment_url_cannot_make_the_proxy_fetch_an_internal_url(
        open_coordinator: Coordinator) -> None:
    """The reported attack: register ``http://internal/secret#``, then the proxy's
    ``{url}/files/x/y`` became ``http://internal/secret`` and its body came back."""
    internal = HostileAgent(open_coordinator.fleet.host(), {
        "/secret": Answer(200, {"Content-Type": "text/plain"}, SECRET)})
    try:
        for url in (f"{internal.url}/secret#", f"{internal.url}/secret?", f"{internal.url}#"):
            answer = open_coordinator.register("n1", url, NODE_TOKENS["n1"])
            assert_refused(answer, 400, "url: ")
        proxied = open_coordinator.call("/api/nodes/n1/files/x/y")
        assert_refused(proxied, 404, "no agent named")
        assert SECRET not in proxied.raw
        assert internal.seen == []
    finally:
        internal.close()


def test_agent_urls_are_built_from_parts() -> None:
    """Defence in depth: even an agent URL with a path, query, fragment or user info (which
    neither registration nor the config accepts) cannot redirect a request."""
    base = "http://user:pw@10.0.0.5:8701/prefix?q=1#frag"
    url = agent_url(base, ["files", "logs", "a#b?c", "%2e%2e", "x y"], {"since": "1"})
    assert url == "http://10.0.0.5:8701/prefix/files/logs/a%23b%3Fc/%252e%252e/x%20y?since=1"
    assert agent_url("https://[::1]:443/", ["readyz"]) == "https://[::1]:443/readyz"


@pytest.mark.parametrize("url", ["http://127.0.0.9:8701/#", "http://127.0.0.9:8701/?x",
                                 "http://u@127.0.0.9:8701"])
def test_a_configured_agent_url_with_query_fragment_or_userinfo_stops_the_coordinator(
        tmp_path: Path, url: str) -> None:
    config = write_yaml(tmp_path / "c.yml", {"agents": [{"name": "s1", "url": url}]})
    run = subprocess.run([sys.executable, "-m", "coordinator", "--config", str(config),
                          "--check-config"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "agents[0].url" in run.stderr, run.stderr


# -- S7: a node's token is good for its own name only ------------------------------------------


def test_a_node_token_cannot_register_or_delete_another_node(
        open_coordinator: Coordinator) -> None:
    coordinator = open_coordinator
    n1_url = "http://127.0.0.30:8701"
    assert coordinator.register("n1", n1_url, NODE_TOKENS["n1"]).status == 200
    try:
        # n2 (or whoever stole its token) tries to take over n1's name, then to remove it
        hijack = coordinator.register("n1", "http://127.0.0.66:8701", NODE_TOKENS["n2"])
        assert_refused(hijack, 403, "belongs to node 'n2'", "'n1'")
        assert coordinator.agents()["n1"]["url"] == n1_url
        assert_refused(coordinator.deregister("n1", NODE_TOKENS["n2"]), 403, "'n1'")
        assert "n1" in coordinator.agents()
        # no token, a wrong one, or the token the coordinator sends to agents: 401
        for token in (None, "wrong-token-wrong-token", AGENT_TOKEN, CLIENT_TOKEN):
            answer = coordinator.register("n1", "http://127.0.0.66:8701", token)
            assert_refused(answer, 401)
            assert answer.headers.get("www-authenticate", "").startswith("Bearer")
            assert_refused(coordinator.deregister("n1", token), 401)
        # a name in no line of the tokens file cannot be taken by any token
        assert_refused(coordinator.register("n3", n1_url, NODE_TOKENS["n1"]), 403)
        assert coordinator.agents()["n1"]["url"] == n1_url
    finally:
        assert coordinator.deregister("n1", NODE_TOKENS["n1"]).status == 200
    assert "n1" not in coordinator.agents()


def test_tokens_file_is_reloaded_on_sighup(tmp_path: Path) -> None:
    path = Path(tokens_file(tmp_path))
    with start(tmp_path, registration={"tokens_file": str(path)}) as coordinator:
        new_token = "n1-rotated-token-" + "9" * 10
        path.write_text(f"n1 {new_token}\n")
        coordinator.fleet.coordinator.signal(signal.SIGHUP)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while coordinator.register("n1", "http://127.0.0.31:1", new_token).status != 200:
            assert time.monotonic() < deadline, "the new token was not loaded"
            time.sleep(0.1)
        assert_refused(coordinator.register("n1", "http://127.0.0.31:1", NODE_TOKENS["n1"]), 401)
        assert_refused(coordinator.register("n2", "http://127.0.0.31:1", NODE_TOKENS["n2"]), 401)
        path.write_text("garbage\n")  # a bad reload keeps the old tokens
        coordinator.fleet.coordinator.signal(signal.SIGHUP)  # type: ignore[union-attr]
        time.sleep(0.5)
        assert coordinator.register("n1", "http://127.0.0.31:1", new_token).status == 200
