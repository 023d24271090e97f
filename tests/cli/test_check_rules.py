"""The plugin logic of ``fleetzip check`` without a server: ranges, thresholds, perfdata."""

from __future__ import annotations

import math
import re

import pytest

from coordinator.client.check import (
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
