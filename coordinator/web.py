"""The coordinator's web page (`GET /`): one static HTML file plus its script and style.

The page is plain HTML/CSS/JS in ``coordinator/static/`` — no build step, nothing fetched
from outside. It talks to the JSON API with same-origin ``fetch`` calls, so whatever
credentials the browser holds for the coordinator (HTTP Basic) go along.

`IndexHandler` serves ``index.html`` behind the coordinator's auth, uncached, with a strict
Content-Security-Policy: scripts, styles and fetches from this origin only, no inline script,
no framing. The script, style and icon are served from ``/static/`` by `StaticHandler`
(``coordinator.app`` puts it behind the same auth as the page).
"""

from __future__ import annotations

from pathlib import Path

import tornado.web

from common.web import BaseHandler

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_FILE = "index.html"

# Everything from this origin only; no inline script or style, no plugins, no framing,
# forms may only submit here. img 'data:' is not needed and therefore not allowed.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
))

PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    # The page is small and changes with upgrades: always revalidate.
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class IndexHandler(BaseHandler):
    """``GET /``: the web page. Protected like the API, so a browser asks for Basic auth."""

    route = "index"
    protected = True

    def initialize(self, static_dir: Path = STATIC_DIR) -> None:
        self.static_dir = static_dir

    def get(self) -> None:
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)
        # A few KiB read per request: no need to keep it in memory between requests,
        # and an upgrade of the file on disk is served at once.
        self.finish(self.page_bytes())

    def head(self) -> None:
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Length", str(len(self.page_bytes())))
        self.finish()

    def page_bytes(self) -> bytes:
        return (self.static_dir / INDEX_FILE).read_bytes()


class StaticHandler(tornado.web.StaticFileHandler):
    """``/static/(.*)``: the page's script, style and icon from `STATIC_DIR`.

    nosniff so a browser never runs a file as something other than its declared type;
    no-cache so an upgraded coordinator's page never runs with an old script (the files are
    small and answer 304 to a revalidation).
    """

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")

