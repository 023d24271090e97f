"""The agent's ETag of a file, and the file identity a coordinator reads back from it.

The ETag is strong and changes whenever the file's size or modification time does
(RFC 9110 §8.8.3), so it cannot tell a log that grew from a file that was replaced. Its
first field, the inode, can: a coordinator that resumes an entry compares it with the one
its first response carried and stops rather than splice a rotated file's bytes onto the
first file's. (An inode number can be reused once its file is deleted, so this catches
rename-and-recreate rotation, the common kind, not every replacement.)
"""

from __future__ import annotations

import re

_ETAG_RE = re.compile(r'^"([0-9a-f]+)-[0-9a-f]+-[0-9a-f]+"$')


def make_etag(inode: int, size: int, mtime_ns: int) -> str:
    """A strong ETag that changes whenever the file's size or modification time does."""
    return f'"{inode:x}-{size:x}-{mtime_ns:x}"'


def file_identity(etag: str) -> str | None:
    """The inode field of an ETag made by `make_etag`; None for any other ETag."""
    match = _ETAG_RE.match(etag.strip())
    return match.group(1) if match else None
