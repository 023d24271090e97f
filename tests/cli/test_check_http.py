"""`run_check` against a small HTTP server in this process (fast; what `fleetzip check` does
between its arguments and its one line): status codes, bodies, timeouts, the request it sends."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from coordinator.client.check import State, parse_thresholds, run_check
from coordinator.client.http import HttpOptions
from tests.support import free_port


class HealthServer(ThreadingHTTPServer):
    """Answers every GET with `status` and `body`; records each request's path and Accept."""

    daemon_threads = True

    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.seen: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:  # the name http.server calls
        self.server.seen.append((self.path, self.headers.get("Accept")))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/health+json")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[HealthServer]:
    server = HealthServer()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        server.thread.join(5)


def agent_doc(status: str) -> dict[str, Any]:
    return {"status": status, "serviceId": "web-1", "checks": {
        "roots:freeBytes": [{"componentId": "logs", "observedValue": 5000,
                             "status": "pass" if status == "pass" else "fail",
                             "output": None if status == "pass" else "not readable"}],
        "downloads:active": [{"observedValue": 0, "status": "pass"}]}}


def check(url: str, **kwargs: Any) -> Any:
    return run_check(url, HttpOptions(timeout=2.0), {}, {}, **kwargs)


def test_a_pass_answer_is_ok_and_the_request_asks_for_health_json(server: HealthServer) -> None:
    server.answer(200, agent_doc("pass"))
    ticks = iter([10.0, 12.5])
    result = check(server.url, clock=lambda: next(ticks))
    assert result.state is State.OK
    assert server.seen == [("/health", "application/health+json")]
    assert [(m.label, m.value) for m in result.metrics] == [
        ("time", 2.5), ("free_logs", 5000), ("downloads", 0)]
    assert result.text.startswith("agent web-1 pass, 1 root, 0 active downloads, 2.500s")


def test_a_503_fail_answer_is_critical_not_unknown(server: HealthServer) -> None:
    """An unreadable root makes an agent answer 503 with a fail document: CRITICAL, exit 2."""
    server.answer(503, agent_doc("fail"))
    result = check(server.url + "/healthz")
    assert result.state is State.CRITICAL and int(result.state) == 2
    assert server.seen[0][0] == "/healthz"
    assert "roots:freeBytes logs: fail (not readable)" in result.text
    assert result.line().startswith("FLEETZIP CRITICAL - agent web-1 fail")


@pytest.mark.parametrize(("status", "body", "text"), [
    (404, {"error": {"code": "not_found", "message": "x"}},
     "/health answered HTTP 404, not a health document"),
    (500, agent_doc("pass"), "/health answered HTTP 500, not a health document"),
    (200, b"<html>hello</html>", "/health did not answer JSON (HTTP 200)"),
    (503, b"busy", "/health did not answer JSON (HTTP 503)"),
    (200, [1, 2], "/health did not answer a JSON object"),
    (200, {"status": "great"}, "not a health document (status 'great')"),
])
def test_answers_that_are_not_health_documents_are_unknown(
        server: HealthServer, status: int, body: Any, text: str) -> None:
    server.answer(status, body)
    result = check(server.url)
    assert result.state is State.UNKNOWN
    assert result.text.endswith(text) and not result.metrics


def test_thresholds_apply_to_the_fetched_document(server: HealthServer) -> None:
    server.answer(200, agent_doc("pass"))
    result = run_check(server.url, HttpOptions(timeout=2.0), parse_thresholds(["free=10000:"]),
                       {})
    assert result.state is State.WARNING
    assert "free_logs" in result.text


def test_refused_is_critical_and_a_silent_server_is_the_timeout_state() -> None:
    port = free_port()
    assert check(f"http://127.0.0.1:{port}").state is State.CRITICAL
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        options = HttpOptions(timeout=0.3)
        assert run_check(url, options, {}, {}).state is State.CRITICAL
        result = run_check(url, options, {}, {}, timeout_state=State.UNKNOWN)
        assert result.state is State.UNKNOWN


def test_refused_stays_critical_when_the_timeout_state_is_another() -> None:
    result = run_check(f"http://127.0.0.1:{free_port()}", HttpOptions(timeout=2.0), {}, {},
                       timeout_state=State.UNKNOWN)
    assert result.state is State.CRITICAL
    assert result.text.startswith("cannot connect to") and "connection refused" in result.text


def test_an_unresolvable_host_or_a_bad_url_is_unknown_with_the_reason() -> None:
    result = check("http://fleetzip-check.invalid:1", timeout_state=State.CRITICAL)
    assert result.state is State.UNKNOWN
    assert result.text.startswith("cannot resolve the host of")
    result = check("ftp://127.0.0.1/")
    assert (result.state, result.text) == (
        State.UNKNOWN, "not an http:// or https:// URL: 'ftp://127.0.0.1/health'")


def test_an_oversized_answer_is_not_read_whole(server: HealthServer) -> None:
    """Only the first MiB is read: a bigger document is cut, so it is no health document."""
    server.answer(200, {"status": "pass", "pad": "x" * (2 * 1024 * 1024)})
    result = check(server.url)
    assert result.state is State.UNKNOWN and "did not answer JSON" in result.text


def test_response_time_is_kept_to_the_microsecond(server: HealthServer) -> None:
    server.answer(200, {"status": "pass"})
    ticks = iter([1.0, 1.12345678])
    result = check(server.url, clock=lambda: next(ticks))
    assert result.metrics[0].label == "time"
    assert result.metrics[0].value == 0.123457
