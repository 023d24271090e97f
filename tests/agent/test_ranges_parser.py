"""The hand-rolled Range parser and the header limits of `agent.ranges`.

The reference is the former regex parser: right on short headers, but it backtracked
(issue 11, S4) and gave ``int()`` any number of digits. hypothesis compares the two on short
headers; the long ones are checked for their exact, RFC 9110 answers.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ranges import (
    MAX_CONDITION_HEADER,
    Conditions,
    Plan,
    Validators,
    parse_http_date,
    parse_range,
    plan_response,
)
from common.errors import HeaderTooLarge

OLD_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
V = Validators(etag='"abc"', mtime=1_700_000_000)


def reference(header: str, size: int) -> tuple[int, int] | bool | None:
    match = OLD_RANGE_RE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return False
    return start, size if last == "" else min(int(last) + 1, size)


headers = st.text(alphabet="bytesBYTES=-0123456789 \t,x", max_size=24) | st.builds(
    lambda a, b, sp: f"bytes{sp}={sp}{a}{sp}-{sp}{b}{sp}",
    st.from_regex(r"\A[0-9]{0,22}\Z"), st.from_regex(r"\A[0-9]{0,22}\Z"),
    st.sampled_from(["", " ", "\t", "  "]))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(header=headers, size=st.integers(0, 2**63 - 1) | st.integers(0, 100))
def test_same_answers_as_the_former_regex_parser(header: str, size: int) -> None:
    assert parse_range(header, size) == reference(header, size), header


@pytest.mark.parametrize(("header", "size", "expected"), [
    ("bytes=" + "9" * 5000 + "-", 10, False),  # int() refused this: a 500
    ("bytes=0-" + "9" * 5000, 10, (0, 10)),
    ("bytes=-" + "9" * 5000, 10, (0, 10)),
    ("bytes=" + "0" * 5000 + "2-" + "0" * 5000 + "3", 10, (2, 4)),
    ("bytes=" + "9" * 41 + "-" + "9" * 40, 10, None),  # last < first, both huge
    ("bytes=" + "9" * 40 + "-" + "9" * 41, 10, False),
    ("bytes=9223372036854775806-", 2**63 - 1, (2**63 - 2, 2**63 - 1)),
    ("bytes=0-" + " " * 30_000 + "x", 10, None),
    ("bytes=0-" + " " * 30_000, 10, (0, 10)),
    ("bytes=\u00b9-", 10, None),  # a digit to str.isdigit(), not to int()
    ("bytes=\u0661-", 10, None),  # ARABIC-INDIC ONE: \d matched it
])
def test_long_and_odd_ranges(header: str, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("name", ["range", "if_range", "if_match", "if_none_match",
                                  "if_modified_since", "if_unmodified_since"])
def test_header_length_limit(name: str) -> None:
    at_limit = Conditions(**{name: "x" * MAX_CONDITION_HEADER})
    plan_response("GET", at_limit, V, 10)  # accepted (and ignored, being nonsense)
    over = Conditions(**{name: "x" * (MAX_CONDITION_HEADER + 1)})
    header = name.replace("_", "-").title()
    with pytest.raises(HeaderTooLarge, match=header) as caught:
        plan_response("GET", over, V, 10)
    assert caught.value.status == 431 and caught.value.header == header


@pytest.mark.parametrize("value", [
    "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",  # OverflowError: was a 500
    "Mon, 01 Jan 2020 99999999999:00:00 GMT",
    "Mon, 01 Jan 2020 00:00:00 +9999999999999999",
    "9" * 4000,
    "",
    "yesterday",
])
def test_bad_dates_are_ignored(value: str) -> None:
    assert parse_http_date(value) is None
    assert plan_response("GET", Conditions(if_modified_since=value), V, 10) == Plan(200, 0, 10)
