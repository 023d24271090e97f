"""Names that cross a trust boundary: node names and relative file paths.

Agents are untrusted input to the coordinator, and request paths are untrusted input to
the agent. Both sides use these checks so a name can never climb out of its folder.
"""

from __future__ import annotations

import re

NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_node_name(name: str) -> str:
    """*name* if it is a valid node name, else ValueError saying what a name may be."""
    if not isinstance(name, str) or not NODE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid node name {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_relative_path(path: str) -> str:
    """*path* if it is a clean relative path (``a/b.log``), else ValueError saying why.

    Refused: empty, a leading ``/``, a ``.`` or ``..`` segment, an empty segment, a
    backslash, a NUL or any other control character.
    """
    if not path:
        raise ValueError("empty path")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise ValueError("control character in path")
    if "\\" in path:
        raise ValueError("backslash in path")
    if path.startswith("/"):
        raise ValueError("absolute path")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"path segment {segment!r} not allowed")
    return path
