"""The plugin logic of ``fleetzip check`` without a server: ranges, thresholds, perfdata."""

from __future__ import annotations

import math
import re

import pytest

from coordinator.client.check import (
    CheckResult,
    Metric,
    Range,
    State,
    UsageError,
    evaluate,
    health_url,
    parse_range,
    parse_thresholds,
    parse_timeout,
    worst,
)

# 'label'=value[UOM];[warn];[crit];[min];[max]  (Monitoring Plugins development guidelines)
RANGE = r"@?(?:(?:~|-?[0-9.]+):(?:-?[0-9.]+)?|-?[0-9.]+)"  # START:[END] or END, never bare
PERF_RE = re.compile(
    rf"^'(?P<label>(?:[^'=]|'')+)'=(?P<value>-?[0-9]+(?:\.[0-9]+)?)(?P<uom>s|us|ms|%|B|KB|MB|TB|c)?"
    rf"(?:;(?P<warn>{RANGE})?(?:;(?P<crit>{RANGE})?(?:;(?P<min>-?[0-9.]+)?(?:;(?P<max>-?[0-9.]+)?)?)?)?)?$"
)


def agent_doc(status: str = "pass", free: int = 50 * 2**30, active: int = 0,
              active_status: str = "pass") -> dict[str, object]:
    return {
        "status": status, "version": "0.1.0", "serviceId": "web-1",
        "checks": {
            "roots:freeBytes": [
                {"componentId": "logs", "observedValue": free, "observedUnit": "bytes",
                 "status": "pass"},
                {"componentId": "dumps", "observedValue": 5 * 2**30, "observedUnit": "bytes",
                 "status": "pass"},
            ],
            "downloads:active": [{"observedValue": active, "observedUnit": "downloads",
                                  "status": active_status}],
            "uptime": [{"observedValue": 12.5, "observedUnit": "s", "status": "pass"}],
        },
    }


def perf(line: str) -> dict[str, re.Match[str]]:
    _, _, data = line.partition(" | ")
    found = {}
    for item in data.split():
        match = PERF_RE.match(item)
        assert match, f"bad perfdata item {item!r} in {line!r}"
        found[match["label"]] = match
    return found


@pytest.mark.parametrize(("text", "inside", "outside"), [
    ("10", [0, 5, 10], [-1, 10.5]),
    ("10:", [10, 1e12], [9.9]),
    ("~:10", [-1e9, 10], [11]),
    ("10:20", [10, 15, 20], [9, 21]),
    ("@10:20", [9, 21], [10, 15, 20]),  # '@': alert inside
])
def test_plugin_range_semantics(text: str, inside: list[float], outside: list[float]) -> None:
    rng = parse_range(text, float)
    for value in inside:
        assert not rng.alerts(value), (text, value)
    for value in outside:
        assert rng.alerts(value), (text, value)


def test_range_renders_in_base_units() -> None:
    assert str(parse_thresholds(["free=10GiB:"])["free"]) == f"{10 * 2**30}:"
    assert str(parse_thresholds(["time=500ms"])["time"]) == "0.5"
    assert str(Range(-math.inf, 3)) == "~:3"
    assert str(parse_range("@1:2", float)) == "@1:2"


@pytest.mark.parametrize(("text", "rendered"), [("@0:", "@0:"), ("0:", "0:"), ("@~:", "@~:"),
                                                 ("@5", "@5"), ("@0:5", "@5")])
def test_range_never_renders_a_bare_at(text: str, rendered: str) -> None:
    """``-c time=@0:`` once gave perfdata ``;@;`` — not a range a plugin reader accepts."""
    assert str(parse_range(text, float)) == rendered
    line = evaluate(agent_doc(), 0.01, {}, parse_thresholds([f"time={text}"])).line()
    assert re.fullmatch(RANGE, perf(line)["time"]["crit"]), line


@pytest.mark.parametrize("bad", ["time", "time=", "speed=3", "time=abc", "free=5:1", "=3"])
def test_bad_thresholds_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_thresholds([bad])


def test_timeout_syntax() -> None:
    assert parse_timeout("10") == (10.0, State.CRITICAL)
    assert parse_timeout("500ms:unknown") == (0.5, State.UNKNOWN)
    for bad in ("0", "x", "5:maybe"):
        with pytest.raises(UsageError):
            parse_timeout(bad)


def test_pass_without_thresholds_is_ok_with_all_perfdata() -> None:
    result = evaluate(agent_doc(), 0.0123, {}, {})
    assert result.state is State.OK
    line = result.line()
    assert line.startswith("FLEETZIP OK - agent web-1 pass")
    data = perf(line)
    assert set(data) == {"time", "free_logs", "free_dumps", "downloads"}
    assert data["time"]["uom"] == "s" and float(data["time"]["value"]) == pytest.approx(0.0123)
    assert data["free_logs"]["value"] == str(50 * 2**30) and data["free_logs"]["uom"] == "B"


def test_health_status_maps_to_state() -> None:
    assert evaluate(agent_doc("warn", active_status="warn"), 0.01, {}, {}).state is State.WARNING
    fail = evaluate(agent_doc("fail"), 0.01, {}, {})
    assert fail.state is State.CRITICAL
    assert evaluate({"status": "maybe"}, 0.01, {}, {}).state is State.UNKNOWN


def test_free_threshold_applies_per_root_and_root_override_wins() -> None:
    warning = parse_thresholds(["free=10GiB:"])
    result = evaluate(agent_doc(), 0.01, warning, {})
    assert result.state is State.WARNING  # dumps has 5 GiB
    assert "free_dumps" in result.text and "free_logs" not in result.text.split(":", 1)[1]
    data = perf(result.line())
    assert data["free_logs"]["warn"] == f"{10 * 2**30}:"
    critical = parse_thresholds(["free_dumps=6GiB:"])
    assert evaluate(agent_doc(), 0.01, warning, critical).state is State.CRITICAL
    override = parse_thresholds(["free=10GiB:,free_dumps=1GiB:"])
    assert evaluate(agent_doc(), 0.01, override, {}).state is State.OK


def test_time_and_downloads_thresholds() -> None:
    assert evaluate(agent_doc(), 2.5, parse_thresholds(["time=2"]), {}).state is State.WARNING
    assert evaluate(agent_doc(), 2.5, {}, parse_thresholds(["time=2s"])).state is State.CRITICAL
    busy = agent_doc(active=7)
    assert evaluate(busy, 0.1, parse_thresholds(["downloads=5"]), {}).state is State.WARNING


def test_coordinator_document_reports_healthy_agents() -> None:
    doc = {"status": "pass", "serviceId": "coord", "checks": {
        "agents:healthy": [{"observedValue": 2, "observedUnit": "agents", "status": "pass"}],
        "downloads:active": [{"observedValue": 0, "status": "pass"}]}}
    result = evaluate(doc, 0.01, {}, parse_thresholds(["agents=3:"]))
    assert result.state is State.CRITICAL
    assert result.text.startswith("coordinator coord pass")
    assert perf(result.line())["agents"]["crit"] == "3:"


def test_pipe_in_text_cannot_start_perfdata() -> None:
    doc = agent_doc("warn")
    doc["checks"]["uptime"][0].update(status="warn", output="a|b")  # type: ignore[index]
    line = evaluate(doc, 0.01, {}, {}).line()
    assert line.count("|") == 1


def test_worst_ranks_critical_above_unknown() -> None:
    assert worst([State.OK, State.UNKNOWN, State.WARNING]) is State.UNKNOWN
    assert worst([State.UNKNOWN, State.CRITICAL]) is State.CRITICAL
    assert worst([]) is State.OK


def test_health_url() -> None:
    assert health_url("http://h:1") == "http://h:1/health"
    assert health_url("http://h:1/") == "http://h:1/health"
    assert health_url("http://h:1/healthz") == "http://h:1/healthz"


def test_usage_error_messages() -> None:
    cases = [
        (lambda: parse_thresholds(["speed=3"]),
         "unknown metric 'speed' (use time, free, free_<root>, downloads or agents)"),
        (lambda: parse_thresholds(["time"]), "threshold 'time' is not METRIC=RANGE (e.g. time=2)"),
        (lambda: parse_thresholds([" =3"]), "threshold '=3' is not METRIC=RANGE (e.g. time=2)"),
        (lambda: parse_range("@", float), "empty range '@'"),
        (lambda: parse_range(" ", float), "empty range ' '"),
        (lambda: parse_range("5:1", float), "bad range '5:1': start is greater than end"),
        (lambda: parse_range("x:1", float),
         "bad range 'x:1': could not convert string to float: 'x'"),
        (lambda: parse_timeout("0"), "bad --timeout '0': must be more than 0"),
        (lambda: parse_timeout("5:maybe"),
         "bad --timeout '5:maybe': state must be OK, WARNING, CRITICAL or UNKNOWN"),
        (lambda: parse_timeout("soon"), "bad --timeout 'soon': expected a duration like 30s, "
                                        "5m or 2h, got 'soon'"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError) as caught:
            call()
        assert str(caught.value) == message


def test_parse_range_bounds_and_text() -> None:
    assert parse_range("10", float) == Range(0.0, 10.0)
    assert parse_range(" 10: ", float) == Range(10.0, math.inf)
    assert parse_range("~:5", float) == Range(-math.inf, 5.0)
    assert parse_range("@-5:-1", float) == Range(-5.0, -1.0, inside=True)
    assert parse_range("3:3", float) == Range(3.0, 3.0)  # start may equal end
    assert parse_range(" @1:2 ", float).text == "@1:2"
    assert parse_range("1:2", lambda t: float(t) * 10) == Range(10.0, 20.0)


@pytest.mark.parametrize(("rng", "text"), [
    (Range(0.0, 10.0), "10"),
    (Range(10.0, math.inf), "10:"),
    (Range(5.0, 10.0), "5:10"),
    (Range(-math.inf, 3.0), "~:3"),
    (Range(0.0, math.inf), "0:"),  # as given: an empty field would mean no threshold
    (Range(1.5, 2.25, inside=True), "@1.5:2.25"),
    (Range(0.0, 0.000001), "0.000001"),
])
def test_range_text_in_perfdata(rng: Range, text: str) -> None:
    assert str(rng) == text


def test_timeouts() -> None:
    assert parse_timeout("2s") == (2.0, State.CRITICAL)
    assert parse_timeout("1:OK") == (1.0, State.OK)
    assert parse_timeout("1:warning") == (1.0, State.WARNING)
    assert parse_timeout("1:Critical") == (1.0, State.CRITICAL)


def test_thresholds_split_on_commas_and_repeat() -> None:
    parsed = parse_thresholds(["time=2, downloads=30", "", "free_logs = 1KiB:", "agents=@1:2"])
    assert parsed == {"time": Range(0.0, 2.0), "downloads": Range(0.0, 30.0),
                      "free_logs": Range(1024.0, math.inf), "agents": Range(1, 2, inside=True)}
    assert parse_thresholds(["free=1KB"])["free"] == Range(0.0, 1000.0)
    assert parse_thresholds(["time=1,time=3"]) == {"time": Range(0.0, 3.0)}  # last one wins


def test_perfdata_fields_and_quoting() -> None:
    metric = Metric("it's", 1.5, "s", Range(0, 2), Range(0, 3), 0, 10)
    assert metric.perfdata() == "'it''s'=1.5s;2;3;0;10"
    assert Metric("n", 3).perfdata() == "'n'=3"
    assert Metric("n", 3, crit=Range(0, 1)).perfdata() == "'n'=3;;1"
    assert Metric("n", 0.1234567, maximum=2).perfdata() == "'n'=0.123457;;;;2"
    assert Metric("n", 2.0, minimum=0.5).perfdata() == "'n'=2;;;0.5"


def test_line_keeps_text_on_one_line_and_perfdata_after_one_pipe() -> None:
    result = CheckResult(State.WARNING, "a|b\nc", (Metric("x", 1), Metric("y", 2, "B")))
    assert result.line() == "FLEETZIP WARNING - a/b c | 'x'=1 'y'=2B"
    assert CheckResult(State.OK, "fine").line() == "FLEETZIP OK - fine"


def test_headline_and_problems_text() -> None:
    doc = agent_doc("warn", active=2, active_status="warn")
    doc["checks"]["roots:freeBytes"][0].update(status="fail", output="not readable")  # type: ignore[index]
    result = evaluate(doc, 0.25, parse_thresholds(["free_dumps=6GiB:"]),
                      parse_thresholds(["downloads=1"]))
    assert result.state is State.CRITICAL
    assert result.text == (
        "agent web-1 warn (v0.1.0), 2 roots, 2 active downloads, 0.250s: "
        "downloads:active: warn; roots:freeBytes logs: fail (not readable); "
        "free_dumps 5.0 GiB (warning range 6GiB:); downloads 2 (critical range 1)")
    single = {"status": "pass", "serviceId": "agent", "checks": {
        "roots:freeBytes": [{"componentId": "logs", "observedValue": 1, "status": "pass"}]}}
    assert evaluate(single, 1, {}, {}).text == "agent pass, 1 root, 1.000s"
    bare = {"status": "pass"}
    assert evaluate(bare, 0, {}, {}).text == "agent ? pass, 0.000s"
    coordinator = {"status": "fail", "serviceId": "coordinator", "version": "",
                   "checks": {"agents:healthy": [{"observedValue": 0, "status": "fail"}]}}
    assert evaluate(coordinator, 0, {}, {}).text == (
        "coordinator fail, 0 healthy agents, 0.000s: agents:healthy: fail")


def test_non_numeric_or_malformed_checks_are_left_out() -> None:
    doc = {"status": "pass", "checks": {
        "roots:freeBytes": [{"componentId": "a", "observedValue": True},
                            {"componentId": "b", "observedValue": "5"}, "junk",
                            {"observedValue": 7}],
        "downloads:active": [{"observedValue": None}, {"observedValue": 3}],
        "agents:healthy": {"observedValue": 1}}}
    result = evaluate(doc, 0, {}, {})
    assert [(m.label, m.value) for m in result.metrics] == [("time", 0), ("free_?", 7)]
    assert evaluate({"status": "pass", "checks": ["x"]}, 0, {}, {}).state is State.OK


def test_critical_threshold_wins_over_warning_on_the_same_metric() -> None:
    result = evaluate(agent_doc(active=9), 0, parse_thresholds(["downloads=5"]),
                      parse_thresholds(["downloads=8"]))
    assert result.state is State.CRITICAL
    assert "downloads 9 (critical range 8)" in result.text
    assert "warning range" not in result.text


def test_health_url_keeps_queries_and_health_paths() -> None:
    assert health_url("http://h:1/health/") == "http://h:1/health/"
    assert health_url("http://h:1/health?x=1") == "http://h:1/health?x=1"
    assert health_url("http://h:1/base") == "http://h:1/base/health"


def test_perfdata_of_an_evaluation_has_units_and_minimums() -> None:
    result = evaluate(agent_doc(active=3), 0.5, {}, {})
    assert result.line().split(" | ")[1].split() == [
        "'time'=0.5s;;;0", f"'free_logs'={50 * 2**30}B;;;0", f"'free_dumps'={5 * 2**30}B;;;0",
        "'downloads'=3;;;0"]


def test_critical_free_threshold_applies_to_every_root() -> None:
    result = evaluate(agent_doc(), 0.01, {}, parse_thresholds(["free=10GiB:"]))
    assert result.state is State.CRITICAL
    assert "free_dumps 5.0 GiB (critical range 10GiB:)" in result.text
    assert perf(result.line())["free_logs"]["crit"] == f"{10 * 2**30}:"


def test_more_message_edges() -> None:
    for call, message in [
        (lambda: parse_range("1:2:3", float),
         "bad range '1:2:3': could not convert string to float: '1:2'"),
        (lambda: parse_thresholds(["time=2=3"]),
         "bad range '2=3': expected a duration like 30s, 5m or 2h, got '2=3'"),
        (lambda: parse_timeout("1:2:UNKNOWN"),
         "bad --timeout '1:2:UNKNOWN': expected a duration like 30s, 5m or 2h, got '1:2'"),
    ]:
        with pytest.raises(UsageError) as caught:
            call()
        assert str(caught.value) == message
    assert str(Range(-math.inf, 5.0, inside=True)) == "@~:5"
    assert Metric("n", 1, "MAX").perfdata() == "'n'=1MAX"  # only empty fields are trimmed


def test_numbers_that_round_to_an_integer_lose_the_point() -> None:
    assert Metric("n", 2.0000001).perfdata() == "'n'=2"
    assert Metric("n", 0.1000004).perfdata() == "'n'=0.1"


def test_headline_reads_the_first_entry_of_a_count() -> None:
    doc = {"status": "pass", "serviceId": "a1", "checks": {
        "downloads:active": [{"observedValue": 1}, {"observedValue": 9}]}}
    result = evaluate(doc, 0, {}, {})
    assert result.text == "agent a1 pass, 1 active downloads, 0.000s"
    assert [(m.label, m.value) for m in result.metrics] == [("time", 0), ("downloads", 1)]


def test_health_url_edges() -> None:
    assert health_url("http://h:1/health?a=?b") == "http://h:1/health?a=?b"
    assert health_url("http://h:1/healthX") == "http://h:1/healthX/health"
