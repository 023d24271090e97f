"""A tiny HTTP server that plays a hostile agent (or an internal service an attacker aims at).

It answers every ``GET``/``HEAD`` with what the test told it for that path (a default
answer otherwise) and records each request path, so a test can say whether the
coordinator ever reached it. Runs in a thread on its own loopback address; `close()`
stops it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support import free_port


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HostileAgent:
    def __init__(self, host: str, answers: dict[str, Answer] | None = None,
                 default: Answer | None = None) -> None:
        self.answers = dict(answers or {})
        self.default = default or Answer(404, {"Content-Type": "application/json"},
                                         b'{"error": {"code": "not_found", "message": "no"}}')
        self.seen: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.seen.append(self.path)
                answer = owner.answers.get(self.path.split("?", 1)[0], owner.default)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, free_port(host)), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
