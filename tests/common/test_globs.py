"""`common.globs`: the linear matcher agrees with the regex translation it replaced.

The reference below is the agent's former ``compile_glob`` (a translation to `re`): right,
but exponential on hostile globs. On short paths it is fast, so hypothesis can compare the
two on many small globs and paths.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.globs import MAX_GLOB_LENGTH, MAX_GLOB_WILDCARDS, GlobError, compile_glob


def reference(pattern: str) -> re.Pattern[str]:
    """The former translation: ``*`` → ``[^/]*``, ``?`` → ``[^/]``, ``**`` segments."""
    segments = pattern.split("/")
    parts = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        out, k = [], 0
        while k < len(seg):
            ch = seg[k]
            if ch == "*":
                out.append("[^/]*")
            elif ch == "?":
                out.append("[^/]")
            elif ch == "[":
                end = seg.find("]", k + 2 if seg[k + 1 : k + 2] in ("!", "]") else k + 1)
                body = seg[k + 1 : end]
                # (the old one wrote "[^" + ...: a negated class matched "/", found here)
                out.append("[" + ("^/" + body[1:] if body.startswith("!") else body) + "]")
                k = end
            else:
                out.append(re.escape(ch))
            k += 1
        parts.append("".join(out) + ("" if last else "/"))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


segment = st.text(alphabet="ab.*?", min_size=1, max_size=5).filter(
    lambda s: "**" not in s and s not in (".", ".."))
classes = st.sampled_from(["[ab]", "[!a]", "[a-b]", "[]a]", "[.]"])
glob_segment = st.lists(segment | classes, min_size=1, max_size=3).map("".join).filter(
    lambda s: "**" not in s)
globs = st.lists(glob_segment | st.just("**"), min_size=1, max_size=4).map("/".join)
paths = st.lists(st.text(alphabet="ab.]", min_size=1, max_size=6), min_size=1,
                 max_size=5).map("/".join)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(pattern=globs, path=paths)
def test_same_answers_as_the_regex_translation(pattern: str, path: str) -> None:
    try:
        glob = compile_glob(pattern)
    except GlobError:
        return  # e.g. too many wildcards; the refusals are tested below
    assert glob.match(path) == bool(reference(pattern).match(path)), (pattern, path)


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("*.log", ["a.log", ".log", ".hidden.log"], ["d/a.log", "a.txt", "a.log.1"]),
    ("**/*.log", ["a.log", "d/a.log", "d/e/a.log"], ["a.txt", "d/a.txt"]),
    ("d/**", ["d/a", "d/e/f"], ["x/d/a", "d"]),
    ("d/**/x", ["d/x", "d/e/x", "d/e/f/x"], ["d/ex", "x"]),
    ("**/**/x", ["x", "a/x"], ["a/y"]),
    ("[!a]?.log", ["bc.log"], ["ac.log", "b.log"]),
    ("[^a]?.log", ["bc.log"], ["ac.log"]),
    ("a*b*c", ["abc", "aXbYc", "abbc", "abcbc"], ["acb", "ab", "abcd"]),
    ("*a*", ["a", "bab"], ["b", ""]),
    ("[]a]x", ["]x", "ax"], ["bx"]),
    ("[!]]x", ["ax"], ["]x"]),  # the old translation refused this one
    ("[a-c][-]", ["b-"], ["d-", "bx"]),
    ("ü*€", ["ü-€", "ü€"], ["u€"]),
    ("a?b", ["a\nb", "axb"], ["ab"]),  # a name may hold any character
])
def test_examples(pattern: str, yes: list[str], no: list[str]) -> None:
    glob = compile_glob(pattern)
    assert [p for p in yes if not glob.match(p)] == []
    assert [p for p in no if glob.match(p)] == []


@pytest.mark.parametrize(("pattern", "words"), [
    ("", "empty"),
    ("/etc/*", "relative"),
    ("a\\b", "relative"),
    ("../*", "'..'"),
    ("a//b", "empty"),
    ("a/./b", "'.'"),
    ("a**", "whole path segment"),
    ("[abc", "unclosed"),
    ("a[", "unclosed"),
    ("[]", "unclosed"),
    ("[z-a]", "bad range"),
    ("a\x00b", "control character"),
    ("a" * (MAX_GLOB_LENGTH + 1), f"at most {MAX_GLOB_LENGTH} characters"),
    ("?" * (MAX_GLOB_WILDCARDS + 1), f"at most {MAX_GLOB_WILDCARDS} wildcards"),
    ("[a]" * (MAX_GLOB_WILDCARDS + 1), "wildcards"),
    ("**/" * (MAX_GLOB_WILDCARDS + 1) + "x", "wildcards"),
])
def test_refused(pattern: str, words: str) -> None:
    with pytest.raises(GlobError, match=re.escape(words)):
        compile_glob(pattern)


def test_at_the_limits() -> None:
    assert compile_glob("a" * MAX_GLOB_LENGTH).match("a" * MAX_GLOB_LENGTH)
    assert compile_glob("?" * MAX_GLOB_WILDCARDS).match("b" * MAX_GLOB_WILDCARDS)


def test_hostile_globs_still_answer_correctly() -> None:
    """The shapes that blow up backtracking matchers, with both answers."""
    backtracker = compile_glob("*?" * 15 + "*Z")
    assert not backtracker.match("a" * 255)
    assert backtracker.match("a" * 254 + "Z")
    nested = compile_glob("**/a*/" * 6 + "Z")
    assert not nested.match("a/" * 60 + "b")
    assert nested.match("a/" * 60 + "Z")


def test_recursive() -> None:
    assert not compile_glob("*.log").recursive
    assert compile_glob("**").recursive and compile_glob("d/*.log").recursive


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("[a-]x", ["ax", "-x"], ["bx"]),  # a '-' last in a class is a member
    ("[a-a]x", ["ax"], ["bx"]),  # a one-character range is valid
    ("[a-cx]", ["a", "b", "c", "x"], ["d"]),  # a member after a range
    ("[0a-c-e]", ["0", "b", "-", "e"], ["d"]),  # '-' after a range is a member, not a range
])
def test_class_ranges_and_members(pattern: str, yes: list[str], no: list[str]) -> None:
    glob = compile_glob(pattern)
    assert [name for name in yes if not glob.match(name)] == []
    assert [name for name in no if glob.match(name)] == []
