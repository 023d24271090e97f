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
