"""The planner in-process against small HTTP agents on 127.0.0.1: what each agent answer
becomes in the plan (node, skipped or failed, and the recorded reason), the requests sent,
the errors of a selection nothing answers, the size limits, and ``/api/plan``'s body.

The agents are real HTTP servers (a real agent cannot be made to answer 500 or lie), the
planner uses the coordinator's real `AgentApi` and `Registry`; no coordinator is started,
so ``make mutation`` can run these for every mutant of ``coordinator/planner.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from common.errors import BadRequest, NotFound, PayloadTooLarge
from coordinator.agentapi import AgentApi
from coordinator.config import CoordinatorConfig, DownloadConfig, HealthConfig, StaticAgent
from coordinator.discovery import Registry
from coordinator.listing import MAX_TOTAL_BYTES, checked_entries
from coordinator.model import AgentRef, NodePlan, Plan, PlannedFile, Selection, SkippedNode
from coordinator.planner import Planner, plan_to_json, within_total
from tests.support import free_port

pytestmark = pytest.mark.timeout(60)

MTIME = 1_700_000_000.0
CREATED = 1_800_000_000.5


def entry(path: str, size: int = 10) -> dict[str, Any]:
    return {"path": path, "type": "file", "size": size, "mtime": MTIME}


def listing(*entries: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"root": "logs", "entries": list(entries)}


def error(status: int, code: str, message: str) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message}}


class Agents(ThreadingHTTPServer):
    """Answers ``GET /<name>/list/...`` with ``answers[name]`` (after ``delay`` seconds);
    records the request targets and the most requests in flight at once."""

    daemon_threads = True

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {}
        self.targets: list[str] = []
        self.delay = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    server: Agents

    def do_GET(self) -> None:  # the name http.server calls
        server = self.server
        with server.lock:
            server.targets.append(self.path)
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            time.sleep(server.delay)
            name = self.path.split("/")[1]
            status, answer = server.answers.get(name, listing())
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with server.lock:
                server.in_flight -= 1

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[Agents]:
    agents = Agents()
    yield agents
    agents.stop()


@pytest.fixture
def agents(server: Agents) -> Agents:
    server.answers, server.targets, server.delay = {}, [], 0.0
    server.most_in_flight = 0
    return server


def make_planner(agents: Agents, names: list[str], *, concurrency: int = 32,
                 max_archive_size: int = 0, labels: dict[str, dict[str, str]] | None = None,
                 ) -> Planner:
    labels = labels or {}
    config = CoordinatorConfig(
        listen="127.0.0.1:0",
        agents=tuple(StaticAgent(n, f"{agents.url}/{n}", labels.get(n, {})) for n in names),
        health=HealthConfig(concurrency=concurrency),
        download=DownloadConfig(max_archive_size=max_archive_size, idle_timeout=10))
    return Planner(config, Registry(config), AgentApi(config), clock=lambda: CREATED)


def run_plan(planner: Planner, selection: Selection) -> Plan:
    async def run() -> Plan:
        return await planner.plan(selection)
    return asyncio.run(run())


def ref(agents: Agents, name: str, labels: dict[str, str] | None = None) -> AgentRef:
    return AgentRef(name, f"{agents.url}/{name}", labels or {}, "static")


# ---------------------------------------------------------------------------------------------
# what each answer becomes


def test_each_agent_answer_becomes_a_node_or_a_recorded_skip(agents: Agents) -> None:
    names = ["a-files", "b-noroot", "c-404", "d-500", "e-empty", "f-liar", "g-badjson"]
    agents.answers = {
        "a-files": listing(entry("x.log", 3), entry("sub/y.log", 4)),
        "b-noroot": error(404, "unknown_root", "no root 'logs'"),
        "c-404": error(404, "not_found", "no such path"),
        "d-500": error(500, "internal", "disk on fire"),
        "e-empty": listing(),
        "f-liar": listing(entry("../etc/passwd"), entry("/abs")),
        "g-badjson": (200, "not a listing"),
    }
    planner = make_planner(agents, names)
    planner.registry.state("a-files").features = frozenset({"checksum"})
    plan = run_plan(planner, Selection("logs"))
    assert plan.created == CREATED and plan.selection == Selection("logs")
    assert plan.nodes == (NodePlan(
        ref(agents, "a-files"), "logs",
        (PlannedFile("sub/y.log", 4, MTIME), PlannedFile("x.log", 3, MTIME)),  # by path
        (), frozenset({"checksum"})),)
    skipped = {s.name: s for s in plan.skipped}
    assert [s.name for s in plan.skipped] == names[1:]  # in the selection's order
    url = agents.url
    assert skipped["b-noroot"] == SkippedNode("b-noroot", f"{url}/b-noroot", "skipped",
                                              "no root named 'logs'")
    assert skipped["c-404"] == SkippedNode("c-404", f"{url}/c-404", "skipped",
                                           "/list: HTTP 404: no such path")
    assert skipped["d-500"] == SkippedNode("d-500", f"{url}/d-500", "failed",
                                           "/list: HTTP 500: disk on fire")
    assert skipped["e-empty"] == SkippedNode("e-empty", f"{url}/e-empty", "skipped",
                                             "no matching files")
    liar = skipped["f-liar"]
    assert liar.state == "skipped" and liar.url == f"{url}/f-liar"
    _, refusals = checked_entries(agents.answers["f-liar"][1], None)  # listing.py's words
    assert len(refusals) == 2 and "'../etc/passwd'" in refusals[0] and "'/abs'" in refusals[1]
    assert liar.error == "no matching files; listed entries refused: " + "; ".join(refusals)
    bad = skipped["g-badjson"]
    assert bad.state == "skipped" and bad.error.startswith("no matching files")


def test_an_agent_that_does_not_answer_is_failed_with_the_reason() -> None:
    """A closed port: failed (not skipped), with the client's reason, and the plan goes on."""
    port = free_port()  # nothing listens there
    config = CoordinatorConfig(listen="127.0.0.1:0",
                               agents=(StaticAgent("gone", f"http://127.0.0.1:{port}"),))
    planner = Planner(config, Registry(config), AgentApi(config), clock=lambda: CREATED)
    plan = run_plan(planner, Selection("logs"))
    (gone,) = plan.skipped
    assert (gone.name, gone.url, gone.state) == ("gone", f"http://127.0.0.1:{port}", "failed")
    assert not gone.error.startswith(("/list", "no root", "no matching"))
    assert "refused" in gone.error.lower(), gone.error  # e.g. "unreachable: [Errno 111] …"
    assert plan.nodes == ()


def test_the_listing_request_carries_the_selection(agents: Agents) -> None:
    planner = make_planner(agents, ["a"])
    run_plan(planner, Selection("logs", path="sub/dir"))
    run_plan(planner, Selection("logs", glob="**/*.log", since=1_700_000_000.25))
    assert agents.targets == ["/a/list/logs/sub/dir?recursive=true",
                              "/a/list/logs?glob=%2A%2A%2F%2A.log&since=1700000000.25"]


def test_refused_entries_of_a_node_with_files_are_kept_and_logged(
        agents: Agents, caplog: pytest.LogCaptureFixture) -> None:
    liars = [entry(f"../x{i}") for i in range(4)]
    agents.answers = {"a": listing(entry("ok.log"), *liars)}
    with caplog.at_level(logging.WARNING, logger="coordinator.planner"):
        plan = run_plan(make_planner(agents, ["a"]), Selection("logs"))
    (node,) = plan.nodes
    assert [f.path for f in node.files] == ["ok.log"] and len(node.rejected) == 4
    (record,) = [r for r in caplog.records if r.name == "coordinator.planner"]
    assert record.getMessage() == ("agent a listed entries that were refused: "
                                   + "; ".join(node.rejected[:3]))


def test_agents_are_asked_at_once_up_to_the_concurrency(agents: Agents) -> None:
    agents.delay = 0.3
    names = [f"n{i}" for i in range(4)]
    plan = run_plan(make_planner(agents, names, concurrency=2), Selection("logs"))
    assert agents.most_in_flight == 2
    assert [s.name for s in plan.skipped] == names  # empty listings, all asked


# ---------------------------------------------------------------------------------------------
# selections nothing answers


def test_a_root_no_selected_agent_has_is_a_bad_request_naming_it(agents: Agents) -> None:
    agents.answers = {n: error(404, "unknown_root", "no root") for n in ("a", "b")}
    with pytest.raises(BadRequest) as caught:
        run_plan(make_planner(agents, ["a", "b"]), Selection("logs"))
    assert caught.value.message == "root: no selected agent has a root named 'logs'"
    assert caught.value.parameter == "root"


def test_a_root_missing_on_some_agents_only_is_a_plan(agents: Agents) -> None:
    agents.answers = {"a": error(404, "unknown_root", "no root"),
                      "b": error(500, "internal", "broken")}
    plan = run_plan(make_planner(agents, ["a", "b"]), Selection("logs"))
    assert [s.state for s in plan.skipped] == ["skipped", "failed"] and plan.nodes == ()
    agents.answers = {"a": error(404, "unknown_root", "no root"), "b": listing(entry("f"))}
    plan = run_plan(make_planner(agents, ["a", "b"]), Selection("logs"))
    assert [n.agent.name for n in plan.nodes] == ["b"]


def test_unknown_nodes_are_a_bad_request_naming_each(agents: Agents) -> None:
    planner = make_planner(agents, ["a"])
    with pytest.raises(BadRequest) as caught:
        planner.select(Selection("logs", nodes=("x", "a", "y")))
    assert caught.value.message == "nodes: unknown node(s) x, y"
    assert caught.value.parameter == "nodes"


@pytest.mark.parametrize(("names", "selection", "message"), [
    ([], Selection("logs"), "no node matches the selection (no agent is known)"),
    (["a", "b"], Selection("logs", labels={"dc": "x", "rack": "1"}),
     "no node matches the selection (labels=dc=x,rack=1)"),
    (["a", "b"], Selection("logs", nodes=("a", "b"), labels={"dc": "x"}),
     "no node matches the selection (nodes=a,b; labels=dc=x)"),
])
def test_a_selection_matching_no_node_is_not_found_and_says_what_was_asked(
        agents: Agents, names: list[str], selection: Selection, message: str) -> None:
    planner = make_planner(agents, names, labels={"a": {"dc": "y"}})
    with pytest.raises(NotFound) as caught:
        planner.select(selection)
    assert caught.value.message == message


def test_labels_and_nodes_select_the_agents(agents: Agents) -> None:
    planner = make_planner(agents, ["a", "b", "c"],
                           labels={"a": {"dc": "x"}, "b": {"dc": "x", "r": "1"}})
    assert [a.name for a in planner.select(Selection("logs", labels={"dc": "x"}))] == ["a", "b"]
    assert [a.name for a in planner.select(Selection("logs", nodes=("c", "b")))] == ["b", "c"]


# ---------------------------------------------------------------------------------------------
# sizes and limits


def node(agents: Agents, name: str, *sizes: int) -> NodePlan:
    return NodePlan(ref(agents, name), "logs",
                    tuple(PlannedFile(f"f{i}", s, MTIME) for i, s in enumerate(sizes)))


def test_the_archive_size_limit_is_inclusive_and_names_the_key(agents: Agents) -> None:
    plan = Plan(Selection("logs"), (node(agents, "a", 60, 40),))
    unlimited = make_planner(agents, ["a"])
    unlimited.check_limit(plan, 10**15)
    limited = make_planner(agents, ["a"], max_archive_size=1000)
    limited.check_limit(plan, 1000)
    limited.check_limit(plan, None)  # files total 100
    with pytest.raises(PayloadTooLarge) as caught:
        limited.check_limit(plan, 1001)
    assert caught.value.message == (
        "the planned archive is 1001 bytes, over the limit download.max_archive_size = "
        "1000 bytes; narrow the selection")
    small = make_planner(agents, ["a"], max_archive_size=99)
    with pytest.raises(PayloadTooLarge) as caught:
        small.check_limit(plan, None)
    assert caught.value.message == (
        "the planned files total 100 bytes, over the limit download.max_archive_size = "
        "99 bytes; narrow the selection")
    make_planner(agents, ["a"], max_archive_size=100).check_limit(plan, None)


def test_archive_size_is_the_planned_size(agents: Agents) -> None:
    from coordinator.archive import planned_archive_size
    plan = Plan(Selection("logs"), (node(agents, "a", 5),))
    assert make_planner(agents, ["a"]).archive_size(plan) == planned_archive_size(plan)


def test_nodes_are_admitted_smallest_first_within_the_total(agents: Agents) -> None:
    big, small, middle = node(agents, "big", 20, 10), node(agents, "small", 10), node(
        agents, "middle", 25)
    admitted, refused = within_total([big, small, middle], limit=35)
    assert admitted == (small, middle)  # 10 + 25 = 35: exactly the limit is within
    assert refused == (SkippedNode(  # first in order, but the largest
        "big", f"{agents.url}/big", "failed",
        "lists 30 bytes in 2 files; with the other nodes that is more than an archive "
        "holds (35 bytes)"),)
    three = [node(agents, "x", 15), node(agents, "y", 10), node(agents, "z", 12)]
    admitted, refused = within_total(three, limit=30)  # 10 + 12 = 22; + 15 = 37: the total
    assert admitted == (three[1], three[2]) and [r.name for r in refused] == ["x"]
    admitted, refused = within_total([big, small, middle], limit=34)
    assert admitted == (small,) and [r.name for r in refused] == ["big", "middle"]
    assert within_total([big, small]) == ((big, small), ())
    assert within_total([node(agents, "huge", MAX_TOTAL_BYTES)]) == (
        (node(agents, "huge", MAX_TOTAL_BYTES),), ())
    assert within_total([node(agents, "huge", MAX_TOTAL_BYTES + 1)])[0] == ()


def test_plan_json_has_every_field(agents: Agents) -> None:
    selection = Selection("logs", path="sub")
    files = (PlannedFile("sub/a.log", 3, MTIME), PlannedFile("sub/b.log", 4, MTIME + 1))
    plan = Plan(selection, (NodePlan(ref(agents, "n1"), "logs", files, ("bad entry",)),),
                (SkippedNode("n2", "http://127.0.0.9:1", "failed", "refused"),), CREATED)
    assert plan_to_json(plan, 1234) == {
        "request": selection.as_dict(),
        "nodes": [{"node": "n1", "url": f"{agents.url}/n1",
                   "files": [{"path": "sub/a.log", "entry": "n1/logs/sub/a.log", "size": 3,
                              "mtime": MTIME},
                             {"path": "sub/b.log", "entry": "n1/logs/sub/b.log", "size": 4,
                              "mtime": MTIME + 1}],
                   "bytes": 7, "rejected": ["bad entry"]}],
        "skipped": [{"node": "n2", "url": "http://127.0.0.9:1", "state": "failed",
                     "error": "refused"}],
        "files": 2, "total_bytes": 7, "archive_size": 1234, "sized": True,
    }
    unsized = plan_to_json(plan, None)
    assert unsized["archive_size"] is None and unsized["sized"] is False
