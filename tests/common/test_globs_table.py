"""`common.globs` against the regex translation over an enumerated table, and its exact words.

tests/common/test_globs.py compares the two with hypothesis (500 random examples, seconds);
this table is every glob of up to two elements per segment over a small alphabet, against
every path of a small set: deterministic and well under a second, so ``make mutation`` can
run it for every mutant of ``common/globs.py``. The refusals are checked word for word, as
the agent and the coordinator both send them in a 400 naming ``glob``.
"""

from __future__ import annotations

import itertools

import pytest

from common.globs import (
    MAX_GLOB_LENGTH,
    MAX_GLOB_WILDCARDS,
    GlobError,
    compile_glob,
    match_with_stars,
)
from tests.common.test_globs import reference

ELEMENTS = ["a", "b", ".", "*", "?", "[ab]", "[!a]", "[^b]", "[a-b]", "[]a]", "[a-]", "]"]
SEGMENTS = ["".join(p) for n in (1, 2) for p in itertools.product(ELEMENTS, repeat=n)]
SEGMENTS += ["".join(p) for p in itertools.product(["a", "b", "*", "?", "[!a]"], repeat=3)]
SEGMENTS += ["".join(p) for n in (4, 5)  # two middle pieces: "*a*b*"
             for p in itertools.product(["a", "b", "*"], repeat=n)]
SEGMENTS = [s for s in SEGMENTS if "**" not in s and s not in (".", "..")]
NAMES = ["a", "b", "ab", "ba", "aa", "bb", "aab", "abb", ".a", "a.", "]", "-", "a]b", "^",
         "abab", "abba", "baab", "aaba", "bbab", "ababa", "abbba", "X", "aX"]
PATHS = [*NAMES, "a/b", "b/a", "ab/a", "a/a/a", "a/b/ab", ".a/b", "a/]"]


def globs() -> list[str]:
    one_level = SEGMENTS
    two_levels = [f"{x}/{y}" for x in ("a", "*", "[ab]", "**", "?") for y in SEGMENTS[:40]]
    stars = ["**", "**/a", "a/**", "**/**", "a/**/b", "**/a/**", "*/**/?", "**/*a*/**/b"]
    return one_level + two_levels + stars


def test_same_answers_as_the_regex_translation_on_a_table() -> None:
    wrong = []
    for pattern in globs():
        glob = compile_glob(pattern)
        expected = reference(pattern)
        wrong += [(pattern, path) for path in PATHS
                  if glob.match(path) != bool(expected.match(path))]
    assert wrong == []


@pytest.mark.parametrize(("pattern", "message"), [
    ("", "a glob may not be empty"),
    ("a" * (MAX_GLOB_LENGTH + 1),
     f"a glob may have at most {MAX_GLOB_LENGTH} characters, this one has "
     f"{MAX_GLOB_LENGTH + 1}"),
    ("a\x1fb", "control character in the glob"),
    ("a\x7fb", "control character in the glob"),
    ("\x00", "control character in the glob"),
    ("/a", "a glob is relative to the root or path and uses '/' only"),
    ("a\\b", "a glob is relative to the root or path and uses '/' only"),
    ("a//b", "a glob may not hold an empty, '.' or '..' segment ('a//b')"),
    ("a/", "a glob may not hold an empty, '.' or '..' segment ('a/')"),
    ("./a", "a glob may not hold an empty, '.' or '..' segment ('./a')"),
    ("a/..", "a glob may not hold an empty, '.' or '..' segment ('a/..')"),
    ("a**", "'**' must be a whole path segment, not 'a**'"),
    ("**b/c", "'**' must be a whole path segment, not '**b'"),
    ("?" * (MAX_GLOB_WILDCARDS + 1),
     f"a glob may have at most {MAX_GLOB_WILDCARDS} wildcards (*, ?, [...], **), this one "
     f"has {MAX_GLOB_WILDCARDS + 1}"),
    ("a*" * 20 + "/" + "[a]" * 13,
     f"a glob may have at most {MAX_GLOB_WILDCARDS} wildcards (*, ?, [...], **), this one "
     f"has 33"),
    ("/".join(["**"] * 17) + "/" + "?" * 16,
     f"a glob may have at most {MAX_GLOB_WILDCARDS} wildcards (*, ?, [...], **), this one "
     f"has 33"),
    ("[abc", "unclosed '[' in '[abc'"),
    ("x[!", "unclosed '[' in 'x[!'"),
    ("[]", "unclosed '[' in '[]'"),
    ("[!]", "unclosed '[' in '[!]'"),
    ("d/[z-a]", "bad range z-a in '[z-a]'"),
    ("[b-a]", "bad range b-a in '[b-a]'"),
])
def test_refusals_say_which_rule_in_these_words(pattern: str, message: str) -> None:
    with pytest.raises(GlobError) as caught:
        compile_glob(pattern)
    assert str(caught.value) == message


def test_a_long_segment_is_cut_at_80_characters_in_the_message() -> None:
    seg = "[" + "b" * 200
    with pytest.raises(GlobError) as caught:
        compile_glob(seg)
    assert str(caught.value) == f"unclosed '[' in {repr(seg)[:80]}"
    seg = "x" * 100 + "**"
    with pytest.raises(GlobError) as caught:
        compile_glob(seg)
    assert str(caught.value) == f"'**' must be a whole path segment, not {repr(seg)[:80]}"


@pytest.mark.parametrize("pattern", [
    "a" * MAX_GLOB_LENGTH, "?" * MAX_GLOB_WILDCARDS, "a b", "~/x", "a\x80b",
    "/".join(["**"] * MAX_GLOB_WILDCARDS)])
def test_at_the_limits_and_printable_characters_are_accepted(pattern: str) -> None:
    assert compile_glob(pattern).text == pattern


def test_a_negated_class_never_matches_a_slash_and_classes_take_any_character() -> None:
    assert not compile_glob("a[!b]c").match("a/c")
    assert compile_glob("a[!b]c").match("a\nc")
    assert compile_glob("[^b]").match("a") and not compile_glob("[^b]").match("b")
    assert compile_glob("[,-.]").match("-") and not compile_glob("[a-c]").match("-")
    assert compile_glob("[*]").match("*") and not compile_glob("[*]").match("a")
    assert compile_glob("[?]").match("?") and not compile_glob("[?]").match("a")


def test_stars_in_a_segment_take_the_leftmost_place() -> None:
    glob = compile_glob("*ab*ab*")
    assert glob.match("abab") and glob.match("xabyabz") and not glob.match("aba")
    assert not glob.match("abxa")  # the second "ab" may not overlap the first
    assert compile_glob("a*b").match("ab") and not compile_glob("a*b").match("a")
    assert compile_glob("a*a").match("aa") and not compile_glob("a*a").match("a")
    assert compile_glob("*a*b*c*").match("abc") and not compile_glob("*a*b*c*").match("acb")


def test_match_with_stars_over_items() -> None:
    def same(pattern: str, item: str) -> bool:
        return pattern == item
    assert match_with_stars([["a"]], ["a"], same)
    assert not match_with_stars([["a"]], ["a", "a"], same)
    assert match_with_stars([["a"], ["b"]], ["a", "x", "b"], same)
    assert match_with_stars([["a"], ["b"]], ["a", "b"], same)
    assert not match_with_stars([["a"], ["b"]], ["b"], same)
    assert not match_with_stars([["a"], ["a"]], ["a"], same)  # the two ends may not overlap
    assert match_with_stars([["a"], ["m", "n"], ["z"]], ["a", "m", "n", "z"], same)
    assert match_with_stars([["a"], ["m"], ["n"], ["z"]], ["a", "x", "m", "n", "z"], same)
    assert not match_with_stars([["a"], ["m"], ["n"], ["z"]], ["a", "n", "m", "z"], same)
    assert not match_with_stars([[], ["m", "n"], []], ["m", "x", "n"], same)
    assert match_with_stars([[], ["m", "n"], []], ["x", "m", "n", "y"], same)


def test_recursive_means_paths_below_the_first_level_can_match() -> None:
    assert [compile_glob(g).recursive for g in ("*.log", "[ab]", "**", "a/b", "**/x")] == [
        False, False, True, True, True]
