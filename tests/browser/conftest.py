"""Fixtures of the browser tests: headless Chromium driven by Playwright, against a live
coordinator and real agents started as processes on 127.0.0.x (see `tests.browser.fleet`).

Chromium is Debian's ``/usr/bin/chromium`` (``playwright install`` is never run). Missing, it
fails the tests under CI and skips them elsewhere (`tests.support.require_tool`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.users import hash_password
from tests.browser.fleet import (
    NODE_FILES,
    PASSWORD,
    USER,
    Fleet,
    agent_process,
    coordinator_process,
)
from tests.support import IN_CI, ServerProcess, require_tool

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"


@pytest.fixture(scope="session")
def chromium() -> str:
    return require_tool("chromium")


def playwright_sync_api() -> Any:
    """Playwright's sync API; missing: a failure under CI, a skip elsewhere (like tools)."""
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        message = "playwright is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return sync_api


@pytest.fixture(scope="package")
def browser(chromium: str) -> Iterator[Any]:
    # Not session-wide: while Playwright's sync API is open it marks an asyncio loop as
    # running in the main thread, which breaks every later test that runs a loop itself.
    with playwright_sync_api().sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    agents = {name: agent_process(tmp, i, name) for i, name in enumerate(NODE_FILES)}
    coordinator = coordinator_process(tmp, agents, "coordinator")
    fleet = Fleet(coordinator, agents, NODE_FILES)
    try:
        for agent in agents.values():
            agent.start()
        coordinator.start()
        yield fleet
    finally:
        coordinator.stop()
        for agent in fleet.agents.values():
            agent.stop()


@pytest.fixture(scope="module")
def auth_coordinator(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[ServerProcess]:
    """A second coordinator over the same agents, with HTTP Basic users."""
    tmp = tmp_path_factory.mktemp("auth")
    users = tmp / "users"
    users.write_text(f"{USER}:{hash_password(PASSWORD, iterations=1000)}\n", encoding="utf-8")
    coordinator = coordinator_process(tmp, fleet.agents, "coordinator-auth", users)
    with coordinator.start():
        yield coordinator


@pytest.fixture()
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
