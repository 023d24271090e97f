"""The common way to serve a merged zip, as a reference for bench/coordinator_zip.py.

Flask + `requests` (streamed GETs to each agent) + zipstream-ng (stored) under waitress:
one WSGI thread per download, blocking reads, the zip generator pulled by the WSGI server.

    python bench/flask_baseline.py --listen 127.0.0.1:9000 \\
        --source n1=http://127.0.0.2:8701/files/data/f.bin --source n2=...

``GET /download`` streams ``{name}/f.bin`` for every source; ``GET /livez`` answers 200.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

import requests
import waitress
from flask import Flask, Response, request
from zipstream import ZIP_DEFLATED, ZIP_STORED, ZipStream

CHUNK = 1024 * 1024


def stream_from(session: requests.Session, url: str) -> Iterator[bytes]:
    with session.get(url, stream=True, timeout=30) as response:
        response.raise_for_status()
        yield from response.iter_content(CHUNK)


def make_app(sources: Sequence[tuple[str, str]]) -> Flask:
    app = Flask("flask_baseline")

    @app.get("/livez")
    def livez() -> str:
        return "ok"

    @app.get("/download")
    def download() -> Response:
        session = requests.Session()
        deflate = request.args.get("compression") == "deflate"  # zlib level 6, as the seed
        zs = ZipStream(sized=False, compress_type=ZIP_DEFLATED if deflate else ZIP_STORED)
        for name, url in sources:
            zs.add(stream_from(session, url), f"{name}/{url.rsplit('/', 1)[-1]}")
        return Response(zs, mimetype="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="baseline.zip"'})

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:9000")
    parser.add_argument("--source", action="append", default=[], help="NAME=URL")
    args = parser.parse_args(argv)
    sources = [tuple(s.split("=", 1)) for s in args.source]
    host, port = args.listen.rsplit(":", 1)
    waitress.serve(make_app(sources), host=host, port=int(port), threads=4,  # type: ignore[arg-type]
                   send_bytes=CHUNK, outbuf_high_watermark=16 * CHUNK, _quiet=True)


if __name__ == "__main__":
    main()
