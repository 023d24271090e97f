"""Conditional requests and ranges through `agent.ranges.plan_response` (RFC 9110 §13, §14).

The decisions a client sees (status and byte span) for each precondition header, one rule a
test. The agent's file route answers with exactly this plan (tests/agent/test_files.py checks
the route end to end); these are the fast checks that `make mutation` runs for every mutant.
"""

from __future__ import annotations

import pytest

from agent.ranges import Conditions, Plan, Validators, parse_http_date, parse_range, plan_response

V = Validators(etag='"abc"', mtime=1_700_000_000)
SIZE = 10
WHOLE = Plan(200, 0, SIZE)
AT_MTIME = "Tue, 14 Nov 2023 22:13:20 GMT"  # == V.mtime
BEFORE = "Tue, 14 Nov 2023 22:13:19 GMT"


def plan(method: str = "GET", **headers: str) -> Plan:
    return plan_response(method, Conditions(**headers), V, SIZE)


def test_if_match_with_the_current_tag_passes_and_another_tag_is_412() -> None:
    assert plan(if_match='"abc"') == WHOLE
    assert plan(if_match='"old", "abc"') == WHOLE
    assert plan(if_match='"old","abc"') == WHOLE  # no space after the comma
    assert plan(if_match='"old"') == Plan(412)


def test_if_match_star_matches_any_current_file() -> None:
    assert plan(if_match="*") == WHOLE
    assert plan(if_match='"old", *') == WHOLE


def test_if_unmodified_since_before_the_mtime_is_412() -> None:
    assert plan(if_unmodified_since=BEFORE) == Plan(412)
    assert plan(if_unmodified_since=AT_MTIME) == WHOLE


def test_a_date_without_a_zone_is_invalid_and_ignored() -> None:
    """RFC 9110 §5.6.7: HTTP dates are GMT; ``-0000`` and no zone mean "unknown" → ignored."""
    assert parse_http_date("Tue, 14 Nov 2023 22:13:20") is None
    assert parse_http_date("Tue, 14 Nov 2023 22:13:20 -0000") is None
    assert plan(if_modified_since="Tue, 14 Nov 2023 22:13:20") == WHOLE
    assert plan(if_unmodified_since="Tue, 14 Nov 2023 22:13:19") == WHOLE


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_hit_is_304_for_get_and_head(method: str) -> None:
    assert plan(method, if_none_match='"abc"') == Plan(304)
    assert plan(method, if_none_match="*") == Plan(304)
    assert plan(method, if_none_match='W/"abc"') == Plan(304)  # weak comparison
    assert plan(method, if_none_match='"old"') == WHOLE


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_if_none_match_hit_is_412_for_other_methods(method: str) -> None:
    assert plan(method, if_none_match='"abc"') == Plan(412)


def test_if_none_match_miss_does_not_decide() -> None:
    assert plan(if_none_match='"old"') == WHOLE
    assert plan(if_none_match='"old", W/"older"') == WHOLE


def test_weak_comparison_ignores_w_on_both_sides() -> None:
    from agent.ranges import weak_match

    assert weak_match('W/"abc"', 'W/"abc"')
    assert weak_match('"abc"', 'W/"abc"')
    assert not weak_match('w/"abc"', '"abc"')  # the prefix is case-sensitive: "W/" only


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_modified_since_at_the_mtime_is_304_for_get_and_head(method: str) -> None:
    assert plan(method, if_modified_since=AT_MTIME) == Plan(304)
    assert plan(method, if_modified_since=BEFORE).status == 200


def test_if_range_with_the_current_tag_or_date_serves_the_range() -> None:
    assert plan(range="bytes=2-4", if_range='"abc"') == Plan(206, 2, 5)
    assert plan(range="bytes=2-4", if_range=AT_MTIME) == Plan(206, 2, 5)


def test_if_range_with_another_tag_a_weak_tag_or_another_date_sends_the_whole_file() -> None:
    assert plan(range="bytes=2-4", if_range='"old"') == WHOLE
    assert plan(range="bytes=2-4", if_range='W/"abc"') == WHOLE  # If-Range compares strongly
    assert plan(range="bytes=2-4", if_range=BEFORE) == WHOLE


def test_a_malformed_range_sends_exactly_the_whole_file() -> None:
    assert plan(range="bytes=4-2") == WHOLE
    assert plan(range="lines=0-1") == WHOLE
    assert plan("HEAD", range="bytes=2-4") == WHOLE


def test_only_space_and_tab_are_optional_whitespace_in_a_range() -> None:
    """RFC 9110 §5.6.3: OWS is SP / HTAB; any other whitespace makes the range malformed."""
    assert parse_range(" bytes \t= 2 -\t4 ", SIZE) == (2, 5)
    assert parse_range("bytes\v=2-4", SIZE) is None
    assert parse_range("bytes=2-\f4", SIZE) is None
    assert parse_range("bytes=\x1c2-4", SIZE) is None
