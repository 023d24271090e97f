"""The plain cores, without a server: range arithmetic, the token bucket, globs, paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.bandwidth import TokenBucket
from agent.listing import parse_since
from agent.paths import is_inside, resolve
from agent.ranges import Conditions, Plan, Validators, parse_range, plan_response
from common.download_headers import attachment_disposition, content_type_for_name
from common.errors import BadRequest, NotFound
from common.globs import compile_glob

V = Validators(etag='"abc"', mtime=1_700_000_000)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-", 10, (0, 10)),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=9-9", 10, (9, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=5-100", 10, (5, 10)),
        ("bytes=10-", 10, False),
        ("bytes=-0", 10, False),
        ("bytes=0-", 0, False),
        ("bytes=-5", 0, False),
        ("bytes=3-2", 10, None),
        ("bytes=1-2,4-5", 10, None),
        ("lines=1-2", 10, None),
        ("bytes = 2 - 3", 10, (2, 4)),
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected


def test_plan_response_order_of_preconditions() -> None:
    assert plan_response("GET", Conditions(), V, 10) == Plan(200, 0, 10)
    assert plan_response("GET", Conditions(range="bytes=2-3"), V, 10) == Plan(206, 2, 4)
    assert plan_response("HEAD", Conditions(range="bytes=2-3"), V, 10) == Plan(200, 0, 10)
    assert plan_response("GET", Conditions(range="bytes=20-"), V, 10) == Plan(416)
    assert plan_response("GET", Conditions(if_match='"x"', if_none_match='"abc"'), V, 10) == Plan(
        412
    )
    assert plan_response(
        "GET", Conditions(if_none_match='"abc"', range="bytes=20-"), V, 10
    ) == Plan(304)
    date = "Tue, 14 Nov 2023 22:13:20 GMT"  # == V.mtime
    assert plan_response("GET", Conditions(if_modified_since=date), V, 10) == Plan(304)
    assert plan_response("GET", Conditions(if_unmodified_since=date), V, 10) == Plan(200, 0, 10)
    assert plan_response("GET", Conditions(range="bytes=1-1", if_range=date), V, 10) == Plan(
        206, 1, 2
    )
    assert plan_response("GET", Conditions(range="bytes=1-1", if_range='W/"abc"'), V, 10) == Plan(
        200, 0, 10
    )


def test_if_range_date_must_equal_last_modified() -> None:
    """RFC 9110 §13.1.5: a later (or earlier) date is no match; the whole file, not a range."""
    ranged = Conditions(range="bytes=1-1")
    for date, expected in [
        ("Tue, 14 Nov 2023 22:13:20 GMT", Plan(206, 1, 2)),  # == V.mtime
        ("Tue, 14 Nov 2023 22:13:21 GMT", Plan(200, 0, 10)),  # one second later
        ("Wed, 15 Nov 2023 22:13:20 GMT", Plan(200, 0, 10)),  # a day later
        ("Tue, 14 Nov 2023 22:13:19 GMT", Plan(200, 0, 10)),  # one second earlier
        ("not a date", Plan(200, 0, 10)),
    ]:
        conditions = Conditions(range=ranged.range, if_range=date)
        assert plan_response("GET", conditions, V, 10) == expected, date


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_is_shared_between_callers() -> None:
    fake = FakeTime()
    bucket = TokenBucket(1000, burst=100, clock=fake.clock, sleep=fake.sleep)

    async def two_downloads() -> None:
        async def one() -> None:
            for _ in range(10):
                await bucket.consume(100)

        await asyncio.gather(one(), one())

    asyncio.run(two_downloads())
    # 2000 bytes at 1000 B/s with 100 B of burst: 1.9 s in all, not 0.9 s
    assert fake.now == pytest.approx(1.9)
    assert bucket.piece_size(1 << 20) == 4096
    assert TokenBucket(10**9, burst=1).piece_size(1 << 20) == 1 << 20


def test_token_bucket_credit_does_not_pile_up_while_idle() -> None:
    fake = FakeTime()
    bucket = TokenBucket(1000, burst=100, clock=fake.clock, sleep=fake.sleep)
    fake.now = 3600.0  # idle for an hour: still only one burst of credit
    assert bucket.reserve(100) == 0
    assert bucket.reserve(100) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("glob", "yes", "no"),
    [
        ("*.log", ["a.log"], ["d/a.log", "a.txt"]),
        ("**/*.log", ["a.log", "d/a.log", "d/e/a.log"], ["a.txt"]),
        ("d/**", ["d/a", "d/e/f"], ["x/d/a"]),
        ("d/**/x", ["d/x", "d/e/x"], ["d/ex"]),
        ("[!a]?.log", ["bc.log"], ["ac.log", "b.log"]),
    ],
)
def test_glob(glob: str, yes: list[str], no: list[str]) -> None:
    pattern = compile_glob(glob)
    assert all(pattern.match(p) for p in yes)
    assert not any(pattern.match(p) for p in no)


@pytest.mark.parametrize("glob", ["", "/etc/*", "../*", "a/../b", "a\\b", "a**", "[abc", "a//b"])
def test_bad_glob(glob: str) -> None:
    with pytest.raises(ValueError):
        compile_glob(glob)


def test_parse_since() -> None:
    assert parse_since("1700000000") == 1_700_000_000
    assert parse_since("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_since("2h", now=10_000) == 10_000 - 7200
    with pytest.raises(ValueError):
        parse_since("soon")


def test_resolve_and_is_inside(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs-secret").mkdir()
    (tmp_path / "logs" / "a").write_text("a")
    roots = {"logs": str(tmp_path / "logs")}
    assert resolve(roots, "logs", "a") == str(tmp_path / "logs" / "a")
    assert not is_inside(str(tmp_path / "logs-secret"), str(tmp_path / "logs"))
    with pytest.raises(BadRequest):
        resolve(roots, "logs", "../logs-secret")
    with pytest.raises(NotFound):
        resolve(roots, "nope", "a")


def test_headers_helpers() -> None:
    assert attachment_disposition("a.log") == 'attachment; filename="a.log"'
    assert attachment_disposition('q"x.log') == (
        "attachment; filename=\"q_x.log\"; filename*=UTF-8''q%22x.log"
    )
    assert content_type_for_name("x.json") == "application/json"
    assert content_type_for_name("x.log.gz") == "application/gzip"
    assert content_type_for_name("noext") == "application/octet-stream"
