"""The agent's ETag and the file identity the coordinator reads back from it."""

from __future__ import annotations

import pytest

from common.etag import file_identity, make_etag


def test_identity_is_the_inode_whatever_the_size_and_time() -> None:
    grown = [make_etag(0x1234, size, mtime) for size, mtime in ((10, 5), (20, 9), (0, 0))]
    assert {file_identity(etag) for etag in grown} == {"1234"}
    assert file_identity(make_etag(0x1235, 10, 5)) == "1235"


@pytest.mark.parametrize("etag", ['W/"1-2-3"', '"1-2"', "1-2-3", '"x-2-3"', '"1-2-3-4"', ""])
def test_foreign_etags_name_no_identity(etag: str) -> None:
    assert file_identity(etag) is None


def test_etag_changes_with_each_field_down_to_one_nanosecond() -> None:
    base = make_etag(7, 100, 1_700_000_000_100_000_000)
    assert base.startswith('"') and base.endswith('"')  # strong: never W/
    others = {
        make_etag(8, 100, 1_700_000_000_100_000_000),  # another inode
        make_etag(7, 101, 1_700_000_000_100_000_000),  # another size
        make_etag(7, 100, 1_700_000_000_600_000_000),  # same second, later rewrite
        make_etag(7, 100, 1_700_000_000_100_000_001),  # one nanosecond later
    }
    assert base not in others and len(others) == 4
    assert make_etag(7, 100, 1_700_000_000_100_000_000) == base  # stable for one version


def test_identity_ignores_surrounding_whitespace() -> None:
    assert file_identity(' "ab-1-2"\t') == "ab"
