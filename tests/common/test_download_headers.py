"""`common.download_headers`: what a browser is told about a served file."""

from __future__ import annotations

import pytest

from common.download_headers import (
    FILE_RESPONSE_HEADERS,
    attachment_disposition,
    content_type_for_name,
    safe_content_type,
)


@pytest.mark.parametrize(("value", "expected"), [
    ("text/plain", "text/plain"),
    ("Text/Plain; Charset=UTF-8", "text/plain; charset=utf-8"),
    ('text/plain; format=flowed; charset="utf-8"', "text/plain; charset=utf-8"),
    ("text/plain; charset=utf-7", "text/plain"),  # dropped, not passed on
    ("application/json; charset=utf-8", "application/json; charset=utf-8"),
    ("application/gzip", "application/gzip"),
    ("image/png", "image/png"),
    ("text/html", "application/octet-stream"),
    ("text/html; charset=utf-8", "application/octet-stream"),
    ("application/xhtml+xml", "application/octet-stream"),
    ("image/svg+xml", "application/octet-stream"),
    ("text/xml", "application/octet-stream"),
    ("application/xml", "application/octet-stream"),
    ("text/javascript", "application/octet-stream"),
    ("application/javascript", "application/octet-stream"),
    ("text/css", "application/octet-stream"),
    ("application/pdf", "application/octet-stream"),
    ("multipart/x-mixed-replace; boundary=x", "application/octet-stream"),
    ("text/plain" + " " * 300, "application/octet-stream"),  # over the length limit
    ("", "application/octet-stream"),
    (None, "application/octet-stream"),
    ("text/plain\r\nX-Injected: 1", "application/octet-stream"),
])
def test_safe_content_type(value: str | None, expected: str) -> None:
    assert safe_content_type(value) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("a.txt", "text/plain"), ("a.json", "application/json"), ("a.csv", "text/csv"),
    ("a.png", "image/png"), ("a.log.gz", "application/gzip"), ("a.bz2", "application/x-bzip2"),
    ("a.html", "application/octet-stream"), ("a.htm", "application/octet-stream"),
    ("a.svg", "application/octet-stream"), ("a.xml", "application/octet-stream"),
    ("a.js", "application/octet-stream"), ("a.pdf", "application/octet-stream"),
    ("noext", "application/octet-stream"),
])
def test_content_type_for_name(name: str, expected: str) -> None:
    assert content_type_for_name(name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("a.log", 'attachment; filename="a.log"'),
    ('q"x.log', "attachment; filename=\"q_x.log\"; filename*=UTF-8''q%22x.log"),
    ("100%.log", "attachment; filename=\"100_.log\"; filename*=UTF-8''100%25.log"),
    ("ünï €.log",
     "attachment; filename=\"_n_ _.log\"; filename*=UTF-8''%C3%BCn%C3%AF%20%E2%82%AC.log"),
    ("a\r\nSet-Cookie: x", "attachment; filename=\"a__Set-Cookie: x\"; "
                           "filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x"),
    ("bad\udcff.log", "attachment; filename=\"bad_.log\"; filename*=UTF-8''bad%3F.log"),
])
def test_attachment_disposition(name: str, expected: str) -> None:
    value = attachment_disposition(name)
    assert value == expected
    assert all(32 <= ord(c) < 127 for c in value)


def test_fixed_headers() -> None:
    assert FILE_RESPONSE_HEADERS == {"X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "sandbox"}
