"""TLS end to end: client → coordinator over https, coordinator → agent over mutual TLS;
and SIGHUP re-reading the agents_file."""

from __future__ import annotations

import io
import json
import signal
import ssl
import zipfile
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.coordinator.service_fleet import (
    agent_process,
    agents_by_name,
    coordinator_process,
    pattern,
    wait_for,
)
from tests.support import http_get, write_yaml


def pem(tmp: Path, name: str, blob: Any) -> str:
    path = tmp / name
    blob.write_to_path(str(path))
    return str(path)


def test_merged_download_over_tls_and_mutual_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = pem(tmp_path, "ca.pem", ca.cert_pem)
    agent_cert = ca.issue_cert("127.0.0.2")
    coord_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("fleetzip-coordinator")
    agent = agent_process(tmp_path, 0, "alpha", {"app.log": 200_000})
    config = agent.config.read_text()
    agent.config.write_text(config + "tls:\n"
                            f"  cert: {pem(tmp_path, 'a.crt', agent_cert.cert_chain_pems[0])}\n"
                            f"  key: {pem(tmp_path, 'a.key', agent_cert.private_key_pem)}\n"
                            f"  client_ca: {ca_file}\n")
    agent.url = agent.url.replace("http://", "https://")
    coord = coordinator_process(tmp_path, {
        "agents": [{"name": "alpha", "url": agent.url}],
        "health": {"interval": "0.5s"},
        "tls": {"cert": pem(tmp_path, "c.crt", coord_cert.cert_chain_pems[0]),
                "key": pem(tmp_path, "c.key", coord_cert.private_key_pem)},
        "agent_tls": {"ca": ca_file,
                      "cert": pem(tmp_path, "cl.crt", client_cert.cert_chain_pems[0]),
                      "key": pem(tmp_path, "cl.key", client_cert.private_key_pem)},
    })
    coord.url = coord.url.replace("http://", "https://")
    context = ssl.create_default_context(cafile=ca_file)
    agent_client = ssl.create_default_context(cafile=ca_file)
    client_cert.configure_cert(agent_client)
    with agent.start(context=agent_client), coord.start(context=context):
        # Without a client certificate the agent refuses the TLS handshake.
        with pytest.raises(OSError):
            http_get(agent.url + "/livez", context=context)
        wait_for(lambda: agents_by_name_tls(coord.url, context)["alpha"]["health"] == "pass")
        status, headers, body = http_get(coord.url + "/api/download?root=logs",
                                         context=context, timeout=30)
        assert status == 200, body[:300]
        assert int(headers["Content-Length"]) == len(body)
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.read("alpha/logs/app.log") == pattern(200_000, 0)
            status_doc = json.loads(archive.read("_fleetzip/status.json"))
        assert [n["state"] for n in status_doc["nodes"]] == ["ok"]


def agents_by_name_tls(url: str, context: ssl.SSLContext) -> dict[str, Any]:
    status, _, body = http_get(url + "/api/agents", context=context)
    assert status == 200, body
    return {a["name"]: a for a in json.loads(body)["agents"]}


def test_sighup_rereads_agents_file(tmp_path: Path) -> None:
    one = agent_process(tmp_path, 3, "one", {"a.log": 10})
    two = agent_process(tmp_path, 4, "two", {"a.log": 10})
    sd = tmp_path / "agents.yml"
    write_yaml(sd, [{"targets": [one.url], "labels": {"node": "one"}}])
    coord = coordinator_process(tmp_path, {"agents_file": str(sd),
                                           "agents_file_interval": "1h",
                                           "health": {"interval": "0.5s"}})
    with one.start(), two.start(), coord.start():
        assert set(agents_by_name(coord.url)) == {"one"}
        write_yaml(sd, [{"targets": [one.url], "labels": {"node": "one"}},
                        {"targets": [two.url], "labels": {"node": "two"}}])
        coord.signal(signal.SIGHUP)
        wait_for(lambda: set(agents_by_name(coord.url)) == {"one", "two"})
        sd.write_text("targets: [this is not a list of groups\n")
        coord.signal(signal.SIGHUP)
        wait_for(lambda: "agents_file" in coord.output() and "keep" in coord.output().lower())
        assert set(agents_by_name(coord.url)) == {"one", "two"}
