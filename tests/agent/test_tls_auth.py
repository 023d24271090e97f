"""Tokens (401, rotation, SIGHUP reload), TLS and mutual TLS on real agent processes."""

from __future__ import annotations

import json
import signal
import ssl
import time
from pathlib import Path

import pytest
import trustme

from tests.agent.conftest import AgentFactory, Tree
from tests.support import http_get

PROTECTED = ["/files/logs/app.log", "/list/logs", "/info", "/metrics"]
OPEN = ["/livez", "/readyz", "/health", "/healthz"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("# rotation: old and new token both valid\ntoken-old\ntoken-new\n")
    return path


def test_tokens_protect_files_list_info_metrics(
    agent_factory: AgentFactory, token_file: Path
) -> None:
    agent = agent_factory(token_file=str(token_file))
    for route in PROTECTED:
        for headers in ({}, bearer("wrong"), {"Authorization": "Basic dG9rZW4tb2xkOg=="}):
            status, answer, body = http_get(agent.url + route, headers)
            assert status == 401, (route, headers)
            lowered = {k.lower(): v for k, v in answer.items()}
            assert lowered["www-authenticate"] == 'Bearer realm="fleetzip"'
            assert json.loads(body)["error"]["code"] == "unauthorized"
        for token in ("token-old", "token-new"):
            assert http_get(agent.url + route, bearer(token))[0] == 200, (route, token)
    for route in OPEN:
        status, _, body = http_get(agent.url + route)
        assert status == 200, route
        assert str(Path(agent.config).parent) not in body.decode()


def test_sighup_reloads_tokens_and_keeps_them_on_a_bad_file(
    agent_factory: AgentFactory, token_file: Path
) -> None:
    agent = agent_factory(token_file=str(token_file))
    url = agent.url + "/info"
    token_file.write_text("token-rotated\n")
    agent.signal(signal.SIGHUP)
    assert wait_status(url, bearer("token-rotated"), 200)
    assert http_get(url, bearer("token-old"))[0] == 401
    token_file.write_text("# nothing but a comment\n")  # an invalid reload
    agent.signal(signal.SIGHUP)
    assert wait_for_log(agent.output, "keeping the previous tokens")
    assert http_get(url, bearer("token-rotated"))[0] == 200
    assert agent.proc is not None and agent.proc.poll() is None


def wait_status(url: str, headers: dict[str, str], expected: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if http_get(url, headers)[0] == expected:
            return True
        time.sleep(0.05)
    return False


def wait_for_log(output: object, text: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if text in output():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(ca_path))
    return {"cert": str(cert_path), "key": str(key_path), "ca": str(ca_path)}


def client_context(ca: trustme.CA, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if with_cert:
        ca.issue_cert("client@fleetzip").configure_cert(context)
    return context


def test_tls(agent_factory: AgentFactory, tree: Tree, ca: trustme.CA, tmp_path: Path) -> None:
    files = tls_files(ca, tmp_path)
    context = client_context(ca, with_cert=False)
    agent = agent_factory(
        tls={"cert": files["cert"], "key": files["key"]}, scheme="https", context=context
    )
    assert agent.url.startswith("https://")
    status, _, body = http_get(agent.url + "/files/logs/app.log", context=context)
    assert (status, body) == (200, b"hello from logs\n")
    with pytest.raises(OSError):  # a client that does not trust the CA
        http_get(agent.url + "/livez", context=ssl.create_default_context())


def test_mutual_tls(
    agent_factory: AgentFactory, tree: Tree, ca: trustme.CA, tmp_path: Path
) -> None:
    files = tls_files(ca, tmp_path)
    with_cert = client_context(ca, with_cert=True)
    agent = agent_factory(
        tls={"cert": files["cert"], "key": files["key"], "client_ca": files["ca"]},
        scheme="https",
        context=with_cert,
    )
    status, _, body = http_get(agent.url + "/files/logs/app.log", context=with_cert)
    assert (status, body) == (200, b"hello from logs\n")
    with pytest.raises(OSError):  # no client certificate: the handshake is refused
        http_get(agent.url + "/files/logs/app.log", context=client_context(ca, with_cert=False))
