"""What release-0.2 agents answer is untrusted input: /info's features, /checksum's body,
the X-Fleetzip-Source-Span header. Junk is refused (as "no feature" / an AgentError), never
trusted, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.agentapi import AgentError
from coordinator.fetch import SPAN_RE, checked_checksum
from coordinator.healthpoll import parse_features

GOOD = {"path": "a.log", "start": 0, "end": 10, "size": 10, "etag": '"1-a-b"', "mtime": 1.0,
        "crc32": 123, "sha256": "ab" * 32}


@pytest.mark.parametrize("value, expected", [
    (["checksum", "deflate"], {"checksum", "deflate"}),
    (["deflate", "teleport", 7, None], {"deflate"}),  # unknown names and non-strings dropped
    ("checksum", set()),  # not a list
    ({"checksum": True}, set()),
    (None, set()),
    (["x"] * 10_000 + ["checksum"], set()),  # only the first 32 items are looked at
])
def test_features_of_an_info_answer(value: Any, expected: set[str]) -> None:
    assert parse_features(value) == expected


def test_a_good_checksum_answer() -> None:
    assert checked_checksum(GOOD, 10) == {"crc32": 123, "sha256": "ab" * 32, "etag": '"1-a-b"'}
    assert checked_checksum({**GOOD, "sha256": None, "etag": 5}, 10)["etag"] is None


@pytest.mark.parametrize("change", [
    {"crc32": -1}, {"crc32": 1 << 32}, {"crc32": "123"}, {"crc32": True}, {"crc32": 1.5},
    {"sha256": "AB" * 32}, {"sha256": "ab" * 31}, {"sha256": "zz" * 32}, {"sha256": 5},
    {"end": 11},  # another range than asked
])
def test_bad_checksum_answers_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(AgentError, match="invalid /checksum answer"):
        checked_checksum({**GOOD, **change}, 10)


@pytest.mark.parametrize("body", [None, [], "x", 5])
def test_a_checksum_answer_that_is_not_an_object(body: Any) -> None:
    with pytest.raises(AgentError):
        checked_checksum(body, 10)


@pytest.mark.parametrize("value, ok", [
    ("0-100/100", True), ("5-10/200", True), ("-1-5/5", False), ("1-2", False),
    ("1" * 20 + "-2/3", False), ("a-b/c", False), ("0-100/100 junk", False),
])
def test_source_span_header_is_parsed_strictly(value: str, ok: bool) -> None:
    assert (SPAN_RE.match(value) is not None) == ok
