"""Issue 11 against a real agent process: S4 (Range), S5 (globs), S10 (deep trees), S2 (agent).

The attacks on time run from several threads at once while a watcher asks ``/livez`` every
50 ms: each must be answered (a clear 4xx or a correct answer) and ``/livez`` must keep
answering within 1 s — the original attacks froze the agent for 4-12 s.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.listing import MAX_WALK_DEPTH
from agent.ranges import MAX_CONDITION_HEADER
from common.globs import MAX_GLOB_LENGTH, MAX_GLOB_WILDCARDS
from tests.faults.harness import Fleet
from tests.hostile.conftest import TOKEN, Target
from tests.hostile.rawhttp import RawAnswer, assert_clear_error, raw_request

LONG_NAME = "a" * 28  # the old glob regex needed ~2.5 s per request for this one name
APP_LOG = b"hello\n" * 100
DEEP_LEVELS = 1100  # past Python's recursion limit (1000): the old walk() raised
LIVEZ_BOUND = 1.0  # seconds: what "the agent stays responsive" means here


@dataclass
class Agent:
    target: Target
    deep_root: Path

    def get(self, path: bytes | str, headers: list[tuple[bytes, bytes]] | None = None,
            timeout: float = 10.0) -> RawAnswer:
        raw = path.encode() if isinstance(path, str) else path
        answer = raw_request(self.target.host, self.target.port, raw,
                             headers=self.target.auth + (headers or []), timeout=timeout)
        self.target.assert_nothing_leaked(answer)
        return answer


def build_roots(base: Path, deep: Path) -> tuple[Path, Path]:
    logs = base / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(APP_LOG)
    (logs / LONG_NAME).write_bytes(b"x")
    (logs / "evil.html").write_bytes(b"<script>alert(document.domain)</script>")
    (logs / "evil.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg">'
                                    b"<script>alert(1)</script></svg>")
    (logs / "notes.txt").write_bytes(b"plain text\n")
    level = deep
    for depth in range(1, DEEP_LEVELS + 1):
        level = level / "d"
        level.mkdir()
        if depth % 10 == 0:
            (level / "x.log").write_bytes(b"%d\n" % depth)
    return logs, deep


def remove_deep_tree(top: Path) -> None:
    """Remove a tree too deep for `shutil.rmtree` (it recurses)."""
    dirs, i = [top], 0
    while i < len(dirs):
        dirs.extend(Path(e.path) for e in os.scandir(dirs[i]) if e.is_dir(follow_symlinks=False))
        i += 1
    for directory in reversed(dirs):
        for item in directory.iterdir():
            if not item.is_dir():
                item.unlink()
        directory.rmdir()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    base = tmp_path_factory.mktemp("parsers")
    secret = base / "secret"
    secret.mkdir()
    marker = f"FLEETZIP-MARKER-{time.time_ns()}".encode()
    (secret / "MARKER.txt").write_bytes(marker)
    # Not below pytest's temporary folder: its clean-up recurses and would fail on this tree
    # in any later session if this one were killed before its own clean-up.
    deep = Path(tempfile.mkdtemp(prefix="fleetzip-deep-"))
    fleet = Fleet(base)
    try:
        logs, deep = build_roots(base, deep)
        token_file = base / "token"
        token_file.write_text(TOKEN + "\n")
        node = fleet.add_agent("parsers", {}, roots={"logs": str(logs), "deep": str(deep)},
                               token_file=str(token_file), max_concurrent_downloads=16)
        fleet.start_agents()
        host, port = node.url.removeprefix("http://").split(":")
        yield Agent(Target(host, int(port), TOKEN, marker, secret, base), deep)
    finally:
        fleet.close()
        remove_deep_tree(deep)


# ------------------------------------------------------------------------------ the watcher


@dataclass
class LivezWatch:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.failures, self.failures[:3]
        assert len(self.latencies) >= 10, "the watcher barely ran"
        worst = max(self.latencies)
        print(f"livez: {len(self.latencies)} polls, worst {worst:.3f} s")
        assert worst < LIVEZ_BOUND, f"/livez took {worst:.2f} s during the attack"


@contextlib.contextmanager
def livez_watched(target: Target) -> Iterator[LivezWatch]:
    """Ask ``/livez`` every 50 ms on a thread while the body runs; `LivezWatch.check` after."""
    watch, stop = LivezWatch(), threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = raw_request(target.host, target.port, b"/livez", timeout=5)
                if answer.status != 200:
                    watch.failures.append(f"/livez answered {answer.status}")
            except OSError as exc:
                watch.failures.append(f"/livez: {exc!r}")
            watch.latencies.append(time.monotonic() - started)
            stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.1)
    try:
        yield watch
    finally:
        stop.set()
        thread.join(10)


def attack(agent: Agent, requests: list[Callable[[], RawAnswer]], *, copies: int = 2,
           duration: float = 1.5) -> list[RawAnswer]:
    """Send each request again and again from *copies* threads for *duration* seconds,
    under a ``/livez`` watch; every answer, for the caller to check."""
    results: list[Any] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def run(request: Callable[[], RawAnswer]) -> None:
        while True:
            try:
                answer: Any = request()
            except Exception as exc:  # reported below, with the others
                answer = exc
            with lock:
                results.append(answer)
            if time.monotonic() > deadline or isinstance(answer, Exception):
                return

    with livez_watched(agent.target) as watch:
        threads = [threading.Thread(target=run, args=(r,)) for r in requests * copies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads), "an attack request never finished"
    watch.check()
    return results


def range_get(agent: Agent, value: bytes, header: bytes = b"Range") -> Callable[[], RawAnswer]:
    return lambda: agent.get(b"/files/logs/app.log", headers=[(header, value)])


# ------------------------------------------------------------------------------- S4: Range


def test_s4_range_redos_is_refused_fast(agent: Agent) -> None:
    """The issue's header (30,000 spaces) is over the limit: 431 naming Range, at once."""
    redos = b"bytes=0-" + b" " * 30_000 + b"x"
    under = b"bytes=0-" + b" " * (MAX_CONDITION_HEADER - 20) + b"x"  # under: malformed
    answers = attack(agent, [range_get(agent, redos), range_get(agent, under)])
    for answer in answers:
        if answer.status == 431:
            assert_clear_error(answer)
            assert "Range" in answer.json()["error"]["message"]
            assert answer.headers["x-content-type-options"] == "nosniff"
        else:  # malformed and under the limit: ignored, the whole file (RFC 9110 §14.2)
            assert answer.status == 200 and answer.body == APP_LOG, answer.raw[:200]
    assert {a.status for a in answers} == {200, 431}


@pytest.mark.parametrize(("value", "status", "body"), [
    (b"bytes=" + b"9" * 5000 + b"-", 431, None),  # the 500 (int digit limit)
    (b"bytes=" + b"9" * 1000 + b"-", 416, None),  # past any file
    (b"bytes=0-" + b"9" * 1000, 206, APP_LOG),  # to the end
    (b"bytes=-" + b"9" * 1000, 206, APP_LOG),  # a suffix longer than the file
    (b"bytes=" + b"0" * 1000 + b"6-" + b"0" * 1000 + b"10", 206, APP_LOG[6:11]),
    (b"bytes=" + b"9" * 30 + b"-" + b"8" * 30, 200, APP_LOG),  # last < first: ignored
])
def test_s4_huge_positions(agent: Agent, value: bytes, status: int, body: bytes | None) -> None:
    answer = agent.get(b"/files/logs/app.log", headers=[(b"Range", value)])
    assert answer.status == status, answer.raw[:300]
    if body is not None:
        assert answer.body == body
    else:
        assert_clear_error(answer)
    if status == 416:
        assert answer.headers["content-range"] == f"bytes */{len(APP_LOG)}"


@pytest.mark.parametrize("header", [b"If-Range", b"If-None-Match", b"If-Match",
                                    b"If-Modified-Since", b"If-Unmodified-Since"])
def test_s4_conditional_headers_have_a_length_limit(agent: Agent, header: bytes) -> None:
    value = b'"x", ' * (MAX_CONDITION_HEADER // 5 + 1)
    answer = agent.get(b"/files/logs/app.log", headers=[(header, value)])
    assert answer.status == 431, answer.raw[:300]
    assert_clear_error(answer)
    assert header.decode() in answer.json()["error"]["message"]


@pytest.mark.parametrize("header", [b"If-Modified-Since", b"If-Unmodified-Since", b"If-Range"])
@pytest.mark.parametrize("value", [b"Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
                                   b"Mon, 01 Jan 2020 99999999999:00:00 GMT",
                                   b"Mon, 01 Jan 2020 00:00:00 +9999999999999999"])
def test_s4_overflowing_dates_are_ignored(agent: Agent, header: bytes, value: bytes) -> None:
    """Dates whose fields overflow used to raise OverflowError: a 500. Invalid dates are
    ignored (RFC 9110 §13.1.3, §13.1.4); an If-Range that does not hold sends it all."""
    headers = [(header, value), (b"Range", b"bytes=0-4")]
    answer = agent.get(b"/files/logs/app.log", headers=headers)
    if header == b"If-Range":
        assert answer.status == 200 and answer.body == APP_LOG, answer.raw[:300]
    else:
        assert answer.status == 206 and answer.body == APP_LOG[:5], answer.raw[:300]


# ------------------------------------------------------------------------------- S5: globs


def list_query(agent: Agent, root: str, **query: str) -> Callable[[], RawAnswer]:
    return lambda: agent.get(f"/list/{root}?{urllib.parse.urlencode(query)}")


def test_s5_glob_redos_is_answered_fast(agent: Agent) -> None:
    """The issue's glob, and one that defeats wcmatch, against names made to hurt them."""
    backtracker = "*?" * 10 + "*Z"  # exponential for a backtracking regex on LONG_NAME
    atomic_breaker = "**/d*/" * 6 + "Z"  # 36 s in wcmatch 12 for 60 levels
    answers = attack(agent, [list_query(agent, "logs", glob=backtracker),
                             list_query(agent, "deep", glob=atomic_breaker)])
    for answer in answers:
        assert answer.status == 200, answer.raw[:300]
        assert answer.json()["entries"] == []
    # the matcher still matches: the same shapes with a reachable end
    found = list_query(agent, "logs", glob="*?" * 10 + "*a")()
    assert [e["path"] for e in found.json()["entries"]] == [LONG_NAME]
    deep = list_query(agent, "deep", glob="**/d*/" * 6 + "x.log")()
    assert deep.status == 200 and len(deep.json()["entries"]) == (MAX_WALK_DEPTH - 1) // 10


@pytest.mark.parametrize(("glob", "words"), [
    ("a" * (MAX_GLOB_LENGTH + 1), f"at most {MAX_GLOB_LENGTH} characters"),
    ("*?" * 20 + "*Z", f"at most {MAX_GLOB_WILDCARDS} wildcards"),
    ("**/" * (MAX_GLOB_WILDCARDS + 1) + "x", f"at most {MAX_GLOB_WILDCARDS} wildcards"),
    ("[z-a]", "bad range"),
])
def test_s5_glob_limits_give_400_naming_glob(agent: Agent, glob: str, words: str) -> None:
    answer = list_query(agent, "logs", glob=glob)()
    assert answer.status == 400, answer.raw[:300]
    assert_clear_error(answer)
    message = answer.json()["error"]["message"]
    assert "glob" in message and words in message, message
    assert len(answer.body) < 1000, "the error echoes the whole glob"


@pytest.mark.parametrize("endpoint", ["/api/plan", "/api/download"])
def test_s5_coordinator_refuses_the_same_globs(coordinator_target: Target,
                                               endpoint: str) -> None:
    for glob in ("*?" * 20 + "*Z", "a" * (MAX_GLOB_LENGTH + 1), "[z-a]"):
        query = urllib.parse.urlencode({"root": "logs", "glob": glob})
        answer = raw_request(coordinator_target.host, coordinator_target.port,
                             f"{endpoint}?{query}".encode(), headers=coordinator_target.auth)
        assert answer.status == 400, answer.raw[:300]
        assert_clear_error(answer)
        assert answer.json()["error"]["message"].startswith("glob:"), answer.body


# ------------------------------------------------------------------------- S10: deep trees


def test_s10_deep_tree_is_listed_to_the_limit_and_reported(agent: Agent) -> None:
    """1100 levels: both a recursive listing and a ``**`` glob answer 200 (were 500)."""
    answers = attack(agent, [list_query(agent, "deep", recursive="true"),
                             list_query(agent, "deep", glob="**/x.log")])
    cut = "/".join(["d"] * MAX_WALK_DEPTH)
    listed_files = (MAX_WALK_DEPTH - 1) // 10  # one x.log every 10 levels, above the cut
    kinds = set()
    for answer in answers:
        assert answer.status == 200, answer.raw[:300]
        body = answer.json()
        assert body["skipped"] == [{"path": cut, "reason": "too_deep"}]
        files = [e["path"] for e in body["entries"] if e["type"] == "file"]
        dirs = [e["path"] for e in body["entries"] if e["type"] == "dir"]
        assert len(files) == listed_files and all(f.endswith("/x.log") for f in files)
        if dirs:  # the recursive listing: every level down to the cut, no deeper
            assert len(dirs) == MAX_WALK_DEPTH and dirs[-1] == cut
            kinds.add("recursive")
        else:
            kinds.add("glob")
    assert kinds == {"recursive", "glob"}


def test_s10_listing_below_the_cut_goes_on(agent: Agent) -> None:
    """The skipped directory can be listed itself: the limit counts from the listed dir."""
    cut = "/".join(["d"] * MAX_WALK_DEPTH)
    answer = agent.get(f"/list/deep/{cut}?recursive=true")
    assert answer.status == 200, answer.raw[:300]
    body = answer.json()
    assert body["entries"][0]["path"] == f"{cut}/d"
    assert body["skipped"] == [{"path": "/".join(["d"] * 2 * MAX_WALK_DEPTH),
                                "reason": "too_deep"}]


# ------------------------------------------------------------------ S2: the agent's files


@pytest.mark.parametrize(("name", "content_type"), [
    ("evil.html", "application/octet-stream"),
    ("evil.svg", "application/octet-stream"),
    ("notes.txt", "text/plain"),
])
def test_s2_files_leave_as_inert_downloads(agent: Agent, name: str, content_type: str) -> None:
    for method in (b"GET", b"HEAD"):
        answer = raw_request(agent.target.host, agent.target.port,
                             f"/files/logs/{name}".encode(), method=method,
                             headers=agent.target.auth)
        assert answer.status == 200, answer.raw[:300]
        assert answer.headers["content-type"] == content_type
        assert answer.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"] == "sandbox"


@pytest.mark.parametrize(("path", "headers", "status"), [
    (b"/files/logs/missing.html", [], 404),
    (b"/files/logs/evil.html", [(b"Range", b"bytes=999-")], 416),
    (b"/files/logs/evil.html", [(b"If-Match", b'"nope"')], 412),
    (b"/files/logs/evil.html", [(b"Range", b"x" * (MAX_CONDITION_HEADER + 1))], 431),
])
def test_s2_errors_of_the_file_route_carry_the_headers(
        agent: Agent, path: bytes, headers: list[tuple[bytes, bytes]], status: int) -> None:
    answer = agent.get(path, headers=headers)
    assert answer.status == status, answer.raw[:300]
    assert_clear_error(answer)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == "sandbox"
    assert answer.headers["content-type"].startswith("application/json")
