"""The coordinator's web page in headless Chromium, against a live coordinator and agents.

Each test looks at what an operator sees: the agent table, the plan preview's totals, a zip
the browser actually downloaded, the login wall, the layout on a phone-sized screen.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.browser.fleet import BIG_FILE_SIZE, PASSWORD, USER, Fleet
from tests.support import ServerProcess, http_get

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

REFRESH = "?refresh=0.5"  # the page's poll interval, seconds
WAIT_MS = 10_000


@contextmanager
def page_at(browser: Any, url: str, width: int = 1200, height: int = 900,
            **context_options: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh browser context and a page opened at *url*; yields (page, problems seen in the
    console), and the page's HTTP response as ``page.first_response``."""
    context = browser.new_context(viewport={"width": width, "height": height},
                                  accept_downloads=True, **context_options)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    try:
        page.first_response = page.goto(url)
        yield page, problems
    finally:
        context.close()


def expect(page: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect(page)


def log_sizes(fleet: Fleet, suffix: str = ".log") -> dict[str, int]:
    """Entry name -> size of every file the tests wrote that ends with *suffix*."""
    return {
        f"{node}/logs/{rel}": size
        for node, files in fleet.files.items()
        for rel, size in files.items() if rel.endswith(suffix)
    }


def agent_versions(fleet: Fleet) -> dict[str, str]:
    """Agent name -> version, as the coordinator's API reports it."""
    status, _, body = http_get(fleet.url + "/api/agents")
    assert status == 200
    return {agent["name"]: agent["version"] for agent in json.loads(body)["agents"]}


def preview(page: Any, root: str, glob: str = "", **fields: str) -> None:
    page.fill("#f-root", root)
    page.fill("#f-glob", glob)
    for name, value in fields.items():
        page.fill(f"#f-{name}", value)
    page.click("#preview-button")


def test_page_headers_and_static_files(fleet: Fleet) -> None:
    status, headers, body = http_get(fleet.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-cache"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert b'src="static/app.js"' in body and b"<script>" not in body
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, headers, _ = http_get(f"{fleet.url}/static/{name}")
        assert status == 200 and kind in headers["Content-Type"], (name, headers)


def test_agent_table_follows_a_node_going_down_and_back(browser: Any, fleet: Fleet) -> None:
    with page_at(browser, fleet.url + "/" + REFRESH) as (page, problems):
        rows = page.locator("#agents-body tr[data-agent]")
        expect(rows).to_have_count(3)
        n2 = page.locator('tr[data-agent="n2"]')
        expect(n2).to_have_attribute("data-health", "pass")
        expect(n2.locator(".health")).to_contain_text("pass")
        expect(n2).to_contain_text(fleet.agents["n2"].url)
        expect(n2).to_contain_text("rack=r1")
        expect(page.locator("#agents-summary")).to_have_text("3 of 3 healthy")
        version = agent_versions(fleet)["n2"]
        assert version
        expect(n2.locator('td[data-label="Version"]')).to_have_text(version)
        expect(n2.locator('td[data-label="Last seen"] time')).to_have_attribute(
            "datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))

        fleet.agents["n2"].stop()
        try:
            expect(n2).to_have_attribute("data-health", "fail")
            expect(n2.locator(".health")).to_contain_text("fail")
            expect(page.locator("#agents-summary")).to_have_text("2 of 3 healthy")
            expect(page.locator("#status")).to_contain_text("n2 is now fail")
            # the others stay up
            expect(page.locator('tr[data-agent="n1"]')).to_have_attribute("data-health", "pass")
        finally:
            fleet.restart_agent("n2")
        expect(n2).to_have_attribute("data-health", "pass")
        expect(page.locator("#status")).to_contain_text("n2 is now pass")
        expect(page.locator("#agents-summary")).to_have_text("3 of 3 healthy")

        # a hung node (SIGSTOP: the port accepts, nothing answers) fails its health check
        n3 = page.locator('tr[data-agent="n3"]')
        fleet.agents["n3"].signal(signal.SIGSTOP)
        try:
            expect(n3).to_have_attribute("data-health", "fail")
        finally:
            fleet.agents["n3"].signal(signal.SIGCONT)
        expect(n3).to_have_attribute("data-health", "pass")
        assert not problems, problems


def test_plan_preview_shows_the_real_total(browser: Any, fleet: Fleet) -> None:
    expected = log_sizes(fleet)
    total = sum(expected.values())
    with page_at(browser, fleet.url + "/") as (page, problems):
        expect(page.locator("#nodes-list input")).to_have_count(3)
        preview(page, "logs", "**/*.log")
        expect(page.locator("#plan")).to_be_visible()
        expect(page.locator("#plan-total")).to_have_attribute("data-bytes", str(total))
        expect(page.locator("#plan-total")).to_contain_text(f"{total:,} bytes")
        expect(page.locator("#plan-files")).to_have_text(str(len(expected)))
        for node in fleet.files:
            node_bytes = sum(size for name, size in expected.items() if name.startswith(node))
            cell = page.locator(f'#plan-nodes-body tr[data-node="{node}"] td[data-bytes]')
            expect(cell).to_have_attribute("data-bytes", str(node_bytes))

        # only the ticked node, and the total follows
        page.check('#nodes-list input[value="n1"]')
        expect(page.locator("#plan-stale")).to_be_visible()
        expect(page.locator("#download-link")).to_be_hidden()
        page.click("#preview-button")
        n1_total = sum(size for name, size in expected.items() if name.startswith("n1/"))
        expect(page.locator("#plan-total")).to_have_attribute("data-bytes", str(n1_total))
        expect(page.locator("#plan-nodes-body tr")).to_have_count(1)
        expect(page.locator("#download-link")).to_be_visible()

        # a label selector instead of ticks: rack=r1 is n2 only
        page.uncheck('#nodes-list input[value="n1"]')
        preview(page, "logs", "**/*.log", labels="rack=r1")
        n2_total = sum(size for name, size in expected.items() if name.startswith("n2/"))
        expect(page.locator("#plan-total")).to_have_attribute("data-bytes", str(n2_total))
        expect(page.locator("#plan-nodes-body tr")).to_have_count(1)
        expect(page.locator('#plan-nodes-body tr[data-node="n2"]')).to_be_visible()

        # deflate: the archive size cannot be known ahead, and the page says so
        page.check('input[name="compression"][value="deflate"]')
        page.click("#preview-button")
        expect(page.locator("#plan-archive")).to_contain_text("not known ahead")
        expect(page.locator("#download-link")).to_have_attribute(
            "href", re.compile(r"compression=deflate"))
        assert not problems, problems


def test_plan_lists_a_down_node_as_skipped(browser: Any, fleet: Fleet) -> None:
    with page_at(browser, fleet.url + "/" + REFRESH) as (page, _problems):
        fleet.agents["n3"].stop()
        try:
            expect(page.locator('tr[data-agent="n3"]')).to_have_attribute("data-health", "fail")
            preview(page, "logs", "**/*.log")
            skipped = page.locator('#plan-skipped-list li[data-node="n3"]')
            expect(skipped).to_be_visible()
            expect(skipped).to_contain_text(fleet.agents["n3"].url)
            without_n3 = sum(s for n, s in log_sizes(fleet).items() if not n.startswith("n3/"))
            expect(page.locator("#plan-total")).to_have_attribute("data-bytes", str(without_n3))
        finally:
            fleet.restart_agent("n3")


def test_api_errors_are_shown_in_the_page(browser: Any, fleet: Fleet) -> None:
    query = urllib.parse.urlencode({"root": "logs", "since": "last tuesday"})
    status, _, body = http_get(f"{fleet.url}/api/plan?{query}")
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "since" in message
    with page_at(browser, fleet.url + "/") as (page, _problems):
        preview(page, "logs", since="last tuesday")
        error = page.locator("#form-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text(message)
        expect(error).to_have_attribute("role", "alert")
        expect(page.locator("#plan")).to_be_hidden()
        # fixing the field clears the error and gives a plan
        preview(page, "logs", since="1h")
        expect(error).to_be_hidden()
        expect(page.locator("#plan")).to_be_visible()


def test_download_from_the_page_is_a_valid_zip(browser: Any, fleet: Fleet, tmp_path: Any) -> None:
    expected = log_sizes(fleet)
    with page_at(browser, fleet.url + "/") as (page, problems):
        preview(page, "logs", "**/*.log", name="from-browser.zip")
        archive = page.locator("#plan-archive")
        expect(archive).to_have_attribute("data-bytes", re.compile(r"^\d+$"))
        archive_size = int(archive.get_attribute("data-bytes") or 0)
        with page.expect_download(timeout=WAIT_MS) as info:
            page.click("#download-link")
        download = info.value
        assert download.failure() is None
        assert download.suggested_filename == "from-browser.zip"
        saved = tmp_path / "from-browser.zip"
        download.save_as(saved)
        expect(page.locator("#status")).to_contain_text("Download started")
        assert not problems, problems

    assert saved.stat().st_size == archive_size  # the size the page promised
    with zipfile.ZipFile(saved) as zf:
        assert zf.testzip() is None
        sizes = {info.filename: info.file_size for info in zf.infolist()}
        status = json.loads(zf.read("_fleetzip/status.json"))
    assert {name: sizes[name] for name in expected if name in sizes} == expected
    assert "_fleetzip/SHA256SUMS" in sizes
    assert sorted(node["state"] for node in status["nodes"]) == ["ok", "ok", "ok"]


def test_downloads_in_progress_are_listed(browser: Any, fleet: Fleet, artifacts: Any) -> None:
    query = "root=big&compression=stored"
    status, _, body = http_get(f"{fleet.url}/api/plan?{query}")
    assert status == 200
    archive_size = json.loads(body)["archive_size"]
    assert archive_size > BIG_FILE_SIZE
    host, port = fleet.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow_client:
        # Ask for 32 MiB and read nothing: flow control keeps the download open.
        slow_client.sendall(f"GET /api/download?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                            .encode())
        with page_at(browser, fleet.url + "/" + REFRESH) as (page, problems):
            item = page.locator("#downloads-list li.download")
            expect(item).to_have_count(1)
            expect(item).to_contain_text("big")
            expect(item.locator('li[data-node="n1"]')).to_be_visible()
            expect(item.locator("progress")).to_have_attribute("max", str(archive_size))
            expect(page.locator("#downloads-empty")).to_be_hidden()
            page.screenshot(path=str(artifacts / "page-download-in-progress.png"),
                            full_page=True)
            slow_client.close()
            expect(item).to_have_count(0)
            expect(page.locator("#downloads-empty")).to_be_visible()
            assert not problems, problems


def refused_navigation(browser: Any, url: str, **context_options: Any) -> Any:
    """Open *url* in a fresh context that must be refused; returns the context's API response.

    Playwright's Chromium cancels an unanswerable Basic challenge (no or rejected
    credentials) by failing the navigation with ERR_INVALID_AUTH_CREDENTIALS; the same
    context's request API shows the status and challenge the browser got.
    """
    context = browser.new_context(**context_options)
    try:
        page = context.new_page()
        try:
            response = page.goto(url)
        except PlaywrightError as exc:
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        else:
            assert response is not None and response.status == 401
        assert page.locator("#download-form").count() == 0  # the page did not render
        api = context.request.get(url)
        return api.status, api.headers.get("www-authenticate", ""), api.text()
    finally:
        context.close()


def test_basic_auth(browser: Any, auth_coordinator: ServerProcess, fleet: Fleet) -> None:
    url = auth_coordinator.url + "/"
    status, challenge, body = refused_navigation(browser, url)
    assert status == 401 and challenge.startswith("Basic"), (status, challenge)
    assert json.loads(body)["error"]["code"]
    wrong = {"username": USER, "password": "wrong"}
    status, _, _ = refused_navigation(browser, url, http_credentials=wrong)
    assert status == 401
    right = {"username": USER, "password": PASSWORD}
    with page_at(browser, url, http_credentials=right) as (page, problems):
        assert page.first_response.status == 200
        # the page's own fetches carry the credentials: agents and a plan come back
        expect(page.locator("#agents-body tr[data-agent]")).to_have_count(3)
        preview(page, "logs", "**/*.log")
        total = sum(log_sizes(fleet).values())
        expect(page.locator("#plan-total")).to_have_attribute("data-bytes", str(total))
        expect(page.locator("#agents-error")).to_be_hidden()
        assert not problems, problems


def test_narrow_screen(browser: Any, fleet: Fleet, artifacts: Any) -> None:
    with page_at(browser, fleet.url + "/", width=375, height=812,
                 is_mobile=True, has_touch=True) as (page, problems):
        expect(page.locator("#agents-body tr[data-agent]")).to_have_count(3)
        preview(page, "logs", "**/*.log")
        expect(page.locator("#plan")).to_be_visible()
        time.sleep(0.2)  # let the layout settle before measuring
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        for selector in ("#f-root", "#f-glob", "#f-labels", "#preview-button",
                         "#download-link", 'input[value="deflate"]'):
            box = page.locator(selector).bounding_box()
            assert box is not None, selector
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375, (selector, box)
        assert page.locator("#preview-button").bounding_box()["height"] >= 36  # touch target
        page.screenshot(path=str(artifacts / "page-narrow.png"), full_page=True)
        assert not problems, problems


def test_screenshot_wide(browser: Any, fleet: Fleet, artifacts: Any) -> None:
    with page_at(browser, fleet.url + "/") as (page, problems):
        expect(page.locator("#agents-body tr[data-agent]")).to_have_count(3)
        preview(page, "logs", "**/*.log")
        expect(page.locator("#plan")).to_be_visible()
        page.screenshot(path=str(artifacts / "page-wide.png"), full_page=True)
        assert (artifacts / "page-wide.png").stat().st_size > 10_000
        assert not problems, problems
