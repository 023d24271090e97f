"""Globs over ``/``-separated relative paths, checked and matched without backtracking.

Syntax: ``*`` any run of characters inside one segment, ``?`` one character, ``[...]`` a
class (``[!...]`` or ``[^...]`` negated, ``a-z`` ranges, a ``]`` right after the ``[`` is
literal), and ``**`` as a whole segment: any number of segments (at least one when it is the
last segment, so ``d/**`` is the files below ``d``). Matching is case-sensitive; ``*`` also
matches names starting with a dot.

Both sides share this module: the agent matches with it, the coordinator checks the
``glob`` parameter with the same `compile_glob` so both refuse the same globs with the
same words (400 naming ``glob``).

Why not a translation to `re` (or `fnmatch`/`wcmatch`): a backtracking regex takes
exponential time on ``*?*?*?…*Z`` (issue 11, S5: 4 s per agent for ten pairs), and
``wcmatch`` 12, whose atomic groups fix that one, still took 36 s for
``**/a*/**/a*/…/Z`` (six pairs) against a 60-level path. Here nothing backtracks:

* a segment pattern is cut at its ``*`` into star-free *pieces*; the first piece must match
  at the start of the name, the last at its end, and each middle piece is taken at its
  leftmost match after the previous one. That is exact for ``*`` (the leftmost match leaves
  the most room for the rest), and a star-free piece is a regex without quantifiers or
  alternatives that matches exactly as many characters as it has elements, so finding it
  costs at most (name length * piece length) steps;
* the same one level up, with ``**`` as the star and segment patterns as the elements.

Matching one path thus costs at most about len(path) * len(glob) steps. The limits below keep
that and the Python-level work per path (one search per piece) small.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

# Real globs are a few dozen characters; 1024 leaves room for long literal names while
# capping the work per listed path at ~1024 * (path length) character steps.
MAX_GLOB_LENGTH = 1024
# Each ``*``, ``?``, ``[...]`` and ``**`` is a wildcard. 32 is far more than any useful glob
# and bounds the searches made per listed path.
MAX_GLOB_WILDCARDS = 32

_T = TypeVar("_T")
_P = TypeVar("_P")


class GlobError(ValueError):
    """A glob that is malformed or over a limit; the message says which rule it breaks."""


@dataclass(frozen=True)
class SegmentPattern:
    """One ``/``-free segment of a glob: star-free pieces that were separated by ``*``."""

    pieces: tuple[re.Pattern[str], ...]  # len(pieces) == number of '*' + 1
    widths: tuple[int, ...]  # how many characters each piece matches

    def match(self, name: str) -> bool:
        if len(self.pieces) == 1:
            return len(name) == self.widths[0] and self.pieces[0].fullmatch(name) is not None
        if len(name) < sum(self.widths):
            return False
        if self.pieces[0].match(name) is None:
            return False
        pos, end = self.widths[0], len(name) - self.widths[-1]
        if self.pieces[-1].fullmatch(name, end) is None:
            return False
        for piece, width in zip(self.pieces[1:-1], self.widths[1:-1], strict=True):
            found = piece.search(name, pos, end)
            if found is None:
                return False
            pos = found.start() + width
        return True


@dataclass(frozen=True)
class Glob:
    """A checked glob; `match` tells whether a ``/``-separated relative path matches."""

    text: str
    groups: tuple[tuple[SegmentPattern, ...], ...]  # runs of segments between '**'

    @property
    def recursive(self) -> bool:
        """Whether paths below the first level can match (the listing must descend)."""
        return "/" in self.text or "**" in self.text

    def match(self, path: str) -> bool:
        return match_with_stars(self.groups, path.split("/"), SegmentPattern.match)


def match_with_stars(
    groups: Sequence[Sequence[_P]], items: Sequence[_T], match_one: Callable[[_P, _T], bool]
) -> bool:
    """Whether *items* match ``groups[0] * groups[1] * … * groups[-1]``.

    Each group element matches exactly one item (by *match_one*); each ``*`` between groups
    matches any number of items. First group anchored at the start, last at the end, middle
    groups at their leftmost place: no backtracking, at most len(items) * len(group) calls
    per group.
    """

    def fits(group: Sequence[_P], at: int) -> bool:
        return all(match_one(p, items[at + k]) for k, p in enumerate(group))

    first, last = groups[0], groups[-1]
    if len(groups) == 1:
        return len(items) == len(first) and fits(first, 0)
    if len(items) < sum(len(g) for g in groups) or not fits(first, 0):
        return False
    pos, end = len(first), len(items) - len(last)
    if not fits(last, end):
        return False
    for group in groups[1:-1]:
        place = next((i for i in range(pos, end - len(group) + 1) if fits(group, i)), None)
        if place is None:
            return False
        pos = place + len(group)
    return True


def compile_glob(text: str) -> Glob:
    """A `Glob` from *text*; `GlobError` (a ValueError) saying what is wrong."""
    check_glob_text(text)
    segments = text.split("/")
    if segments[-1] == "**":
        segments.append("*")  # a trailing '**' stands for at least one more segment
    groups: list[list[SegmentPattern]] = [[]]
    for i, seg in enumerate(segments):
        if seg == "**":
            if i == 0 or segments[i - 1] != "**":  # '**/**' is one '**'
                groups.append([])
        else:
            groups[-1].append(compile_segment(seg))
    return Glob(text, tuple(tuple(g) for g in groups))


def check_glob_text(text: str) -> None:
    """The limits and the path rules of a glob (nothing about its wildcards' syntax)."""
    if not text:
        raise GlobError("a glob may not be empty")
    if len(text) > MAX_GLOB_LENGTH:
        raise GlobError(f"a glob may have at most {MAX_GLOB_LENGTH} characters, "
                        f"this one has {len(text)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise GlobError("control character in the glob")
    if text.startswith("/") or "\\" in text:
        raise GlobError("a glob is relative to the root or path and uses '/' only")
    segments = text.split("/")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise GlobError(f"a glob may not hold an empty, '.' or '..' segment ({text!r:.80})")
        if "**" in seg and seg != "**":
            raise GlobError(f"'**' must be a whole path segment, not {seg!r:.80}")
    wildcards = sum(seg.count("*") + seg.count("?") + seg.count("[") for seg in segments
                    if seg != "**") + segments.count("**")
    if wildcards > MAX_GLOB_WILDCARDS:
        raise GlobError(f"a glob may have at most {MAX_GLOB_WILDCARDS} wildcards "
                        f"(*, ?, [...], **), this one has {wildcards}")


def compile_segment(seg: str) -> SegmentPattern:
    """The `SegmentPattern` of one segment (no ``/``, not ``**``)."""
    pieces: list[list[str]] = [[]]  # regex elements of each piece, one per character
    i = 0
    while i < len(seg):
        ch = seg[i]
        if ch == "*":
            pieces.append([])
        elif ch == "?":
            pieces[-1].append(".")
        elif ch == "[":
            element, i = _class(seg, i)
            pieces[-1].append(element)
            continue
        else:
            pieces[-1].append(re.escape(ch))
        i += 1
    compiled = tuple(re.compile("".join(p), re.DOTALL) for p in pieces)
    return SegmentPattern(compiled, tuple(len(p) for p in pieces))


def _class(seg: str, start: int) -> tuple[str, int]:
    """The regex class for the ``[...]`` at *start*, and the index after its ``]``."""
    i = start + 1
    negate = seg[i : i + 1] in ("!", "^")
    if negate:
        i += 1
    close = seg.find("]", i + 1)  # a ']' right after '[' or '[!' is a member
    if i >= len(seg) or close < 0:
        raise GlobError(f"unclosed '[' in {seg!r:.80}")
    body = seg[i:close]
    members: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            low, high = body[k], body[k + 2]
            if low > high:
                raise GlobError(f"bad range {low}-{high} in {seg!r:.80}")
            members.append(f"{re.escape(low)}-{re.escape(high)}")
            k += 3
        else:
            members.append(re.escape(body[k]))
            k += 1
    return "[" + ("^" if negate else "") + "".join(members) + "]", close + 1
