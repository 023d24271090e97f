"""The headers that make a served file a download a browser never renders or runs.

A file's bytes are whatever a node holds, so a file answer must not become a page on the
server's origin (issue 11, S2: an HTML "log" proxied by the coordinator ran script with the
operator's credentials). Every file answer, from an agent or proxied by the coordinator,
carries:

* ``Content-Disposition: attachment`` with an RFC 6266 / RFC 8187 ``filename*``
  (`attachment_disposition`);
* a ``Content-Type`` from an allow-list of types no browser executes (`safe_content_type`,
  `content_type_for_name`); anything else — HTML, SVG, XML, JavaScript, PDF, unknown — is
  ``application/octet-stream``;
* `FILE_RESPONSE_HEADERS`: ``X-Content-Type-Options: nosniff`` (no guessing HTML from the
  bytes) and ``Content-Security-Policy: sandbox`` (if it is rendered anyway, as an opaque
  origin without script).

Exported for the coordinator's proxy: `safe_content_type(value)` filters a
``Content-Type`` value received from an agent; `attachment_disposition(name)` builds the
disposition from a file name; `FILE_RESPONSE_HEADERS` are the fixed headers.
"""

from __future__ import annotations

import mimetypes
import urllib.parse

OCTET_STREAM = "application/octet-stream"

# Media types a browser shows as inert text or images, or only saves: none runs script,
# none is parsed as markup. Deliberately not here: text/html, application/xhtml+xml,
# image/svg+xml, any XML, text/javascript and other script types, text/css, application/pdf
# (PDF viewers run their own script), text/xsl, multipart/*.
SAFE_TYPES = frozenset({
    "text/plain", "text/csv", "text/tab-separated-values", "text/markdown",
    "application/json", "application/x-ndjson", "application/yaml",
    "application/gzip", "application/x-gzip", "application/zip", "application/x-tar",
    "application/x-bzip2", "application/x-xz", "application/zstd", "application/x-7z-compressed",
    "application/octet-stream",
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif",
})
# Only charsets every browser decodes as such. Others are dropped rather than passed on:
# UTF-7 and friends have been used to smuggle markup past filters.
SAFE_CHARSETS = frozenset({"utf-8", "us-ascii", "iso-8859-1", "windows-1252"})
# What mimetypes calls a content *encoding* (x.log.gz): the file is sent as those bytes.
_ENCODING_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                   "xz": "application/x-xz"}
MAX_CONTENT_TYPE = 200  # a longer value is not one a server meant

FILE_RESPONSE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}


def safe_content_type(value: str | None) -> str:
    """*value* (a ``Content-Type``) if its type is safe to serve, else octet-stream.

    The type is lower-cased; of its parameters only a ``charset`` in `SAFE_CHARSETS` is
    kept (``text/plain; charset=UTF-8`` → ``text/plain; charset=utf-8``).
    """
    if not value or len(value) > MAX_CONTENT_TYPE:
        return OCTET_STREAM
    media_type, *params = value.split(";")
    media_type = media_type.strip(" \t").lower()
    if media_type not in SAFE_TYPES:
        return OCTET_STREAM
    for param in params:
        name, _, charset = param.partition("=")
        charset = charset.strip(" \t").strip('"').lower()
        if name.strip(" \t").lower() == "charset" and charset in SAFE_CHARSETS:
            return f"{media_type}; charset={charset}"
    return media_type


def content_type_for_name(name: str) -> str:
    """The safe ``Content-Type`` for a file called *name*, guessed from its extension."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding:  # a .gz is sent as bytes, not re-labelled as its contents
        return _ENCODING_TYPES.get(encoding, OCTET_STREAM)
    return safe_content_type(guessed)


def attachment_disposition(name: str) -> str:
    """``attachment`` with an ASCII ``filename`` and, when it differs, ``filename*``.

    RFC 6266 §4.3 / appendix D: the fallback keeps printable ASCII except ``"``, ``\\`` and
    ``%`` (some browsers percent-decode it); ``filename*`` (RFC 8187) carries the exact name
    as percent-encoded UTF-8. Control characters never reach the header.
    """
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name)
    if fallback == name:
        return f'attachment; filename="{name}"'
    encoded = urllib.parse.quote(name, safe="", errors="replace")  # a lone surrogate → '?'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
