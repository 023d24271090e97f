"""``fleetzip check``: a Nagios/Icinga plugin over an agent's or a coordinator's ``/health``.

Output is one line, ``FLEETZIP <STATE> - <text> | <perfdata>``, and the exit code is the
state (OK 0, WARNING 1, CRITICAL 2, UNKNOWN 3), as the Monitoring Plugins guidelines say.

The state is the worst of:

* the health document's own ``status``: pass → OK, warn → WARNING, fail → CRITICAL;
* the ``--warning`` / ``--critical`` thresholds, ``METRIC=RANGE`` (comma-separated or
  repeated), where RANGE is the standard plugin range ``[@][START:][END]`` (``10`` alerts
  outside 0..10, ``10:`` below 10, ``~:10`` above 10, ``@10:20`` inside 10..20) and the
  numbers may carry the metric's unit. Metrics (also the perfdata labels):

  ``time``          response time in seconds (``500ms``, ``2s`` or a number)
  ``free``          free bytes of every root (``10GiB``, ``500MB`` or a number)
  ``free_<root>``   free bytes of one root, overriding ``free`` for it
  ``downloads``     active downloads
  ``agents``        healthy agents (coordinator only)

* transport: connection refused, TLS failure, or no answer within ``--timeout`` →
  CRITICAL (``--timeout 10:UNKNOWN`` picks another state for the timeout, as in the
  Monitoring Plugins' ``-t SECONDS:STATE``); an unresolvable host, an answer that is not a
  health document, or a bad argument → UNKNOWN.

Everything here but `run_check` is pure and testable without a server.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from common.config import parse_duration, parse_size
from coordinator.client.http import (
    ClientError,
    ConnectFailed,
    HttpOptions,
    join_url,
    open_url,
)
from coordinator.client.summary import human_bytes

PREFIX = "FLEETZIP"
HEALTH_BODY_LIMIT = 1024 * 1024


class State(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


_HEALTH_STATES = {"pass": State.OK, "warn": State.WARNING, "fail": State.CRITICAL}
_SEVERITY = {State.OK: 0, State.WARNING: 1, State.UNKNOWN: 2, State.CRITICAL: 3}


def worst(states: Iterable[State]) -> State:
    """CRITICAL > UNKNOWN > WARNING > OK (the usual plugin ranking)."""
    return max(states, key=_SEVERITY.__getitem__, default=State.OK)


class UsageError(ValueError):
    """A bad argument of ``check``: reported as UNKNOWN."""


# --- ranges and thresholds -------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A plugin range ``[@][START:][END]``; `alerts(value)` says whether *value* triggers."""

    start: float
    end: float
    inside: bool = False
    text: str = field(default="", compare=False)  # as the user wrote it, for messages

    def alerts(self, value: float) -> bool:
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def __str__(self) -> str:
        """The range in base units, as perfdata wants it."""
        text = "@" if self.inside else ""
        if self.start == -math.inf:
            text += "~:"
        elif self.start != 0 or self.end == math.inf:
            # "0:" is written out when no end follows: a bare "@" (from "@0:") or an
            # empty field is not a range in the Monitoring Plugins format.
            text += f"{_number(self.start)}:"
        if self.end != math.inf:
            text += _number(self.end)
        return text


def parse_range(text: str, number: Callable[[str], float]) -> Range:
    """Parse ``[@][START:][END]``; *number* converts one bound (with its unit)."""
    body = text.strip()
    inside = body.startswith("@")
    body = body[1:] if inside else body
    if not body:
        raise UsageError(f"empty range {text!r}")
    start_text, sep, end_text = body.rpartition(":")
    if not sep:
        start_text, end_text = "", body
    try:
        start = -math.inf if start_text == "~" else (number(start_text) if start_text else 0.0)
        end = number(end_text) if end_text else math.inf
    except ValueError as exc:
        raise UsageError(f"bad range {text!r}: {exc}") from None
    if start > end:
        raise UsageError(f"bad range {text!r}: start is greater than end")
    return Range(start, end, inside, text.strip())


def _metric_number(metric: str) -> Callable[[str], float]:
    if metric == "time":
        return parse_duration
    if metric == "free" or metric.startswith("free_"):
        return lambda text: float(parse_size(text))
    if metric in ("downloads", "agents"):
        return float
    raise UsageError(
        f"unknown metric {metric!r} (use time, free, free_<root>, downloads or agents)"
    )


Thresholds = Mapping[str, Range]


def parse_thresholds(values: Sequence[str]) -> dict[str, Range]:
    """``["time=2,free=10GiB:", "downloads=30"]`` → {metric: Range}."""
    result: dict[str, Range] = {}
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            metric, sep, text = item.partition("=")
            metric = metric.strip()
            if not sep or not metric:
                raise UsageError(f"threshold {item!r} is not METRIC=RANGE (e.g. time=2)")
            result[metric] = parse_range(text, _metric_number(metric))
    return result


def parse_timeout(text: str) -> tuple[float, State]:
    """``10``, ``10s``, ``500ms`` or ``10:UNKNOWN`` → (seconds, state on timeout)."""
    value, sep, state = text.rpartition(":")
    if not sep:
        value, state = text, "CRITICAL"
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"bad --timeout {text!r}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"bad --timeout {text!r}: must be more than 0")
    names = {s.name: s for s in State}
    if state.upper() not in names:
        raise UsageError(f"bad --timeout {text!r}: state must be OK, WARNING, CRITICAL or UNKNOWN")
    return seconds, names[state.upper()]


# --- evaluation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One perfdata value: ``'label'=value[uom];[warn];[crit];[min];[max]``."""

    label: str
    value: float
    uom: str = ""
    warn: Range | None = None
    crit: Range | None = None
    minimum: float | None = None
    maximum: float | None = None

    def perfdata(self) -> str:
        label = self.label.replace("'", "''")
        fields = [
            f"'{label}'={_number(self.value)}{self.uom}",
            "" if self.warn is None else str(self.warn),
            "" if self.crit is None else str(self.crit),
            "" if self.minimum is None else _number(self.minimum),
            "" if self.maximum is None else _number(self.maximum),
        ]
        return ";".join(fields).rstrip(";")


@dataclass(frozen=True)
class CheckResult:
    state: State
    text: str
    metrics: tuple[Metric, ...] = ()

    def line(self) -> str:
        perf = " ".join(metric.perfdata() for metric in self.metrics)
        text = self.text.replace("|", "/").replace("\n", " ")  # '|' would start perfdata
        return f"{PREFIX} {self.state.name} - {text}" + (f" | {perf}" if perf else "")


def evaluate(
    doc: Mapping[str, Any], elapsed: float, warning: Thresholds, critical: Thresholds
) -> CheckResult:
    """The check result for a parsed health document answered in *elapsed* seconds."""
    status = doc.get("status")
    if status not in _HEALTH_STATES:
        return CheckResult(State.UNKNOWN, f"not a health document (status {status!r})")
    checks = doc.get("checks") if isinstance(doc.get("checks"), dict) else {}
    assert isinstance(checks, dict)
    metrics = [_with_thresholds(Metric("time", round(elapsed, 6), "s", minimum=0),
                                "time", warning, critical)]
    metrics += _root_metrics(checks, warning, critical)
    metrics += _count_metrics(checks, warning, critical)
    states = [_HEALTH_STATES[status]]
    problems = _failing_checks(checks)
    for metric in metrics:
        state = _threshold_state(metric)
        if state is not State.OK:
            states.append(state)
            limit = metric.crit if state is State.CRITICAL else metric.warn
            assert limit is not None
            problems.append(f"{metric.label} {_show(metric)} "
                            f"({state.name.lower()} range {limit.text or limit})")
    text = _headline(doc, checks, elapsed)
    if problems:
        text += ": " + "; ".join(problems)
    return CheckResult(worst(states), text, tuple(metrics))


def _with_thresholds(metric: Metric, key: str, warning: Thresholds,
                     critical: Thresholds, fallback: str | None = None) -> Metric:
    warn = warning.get(key) or (warning.get(fallback) if fallback else None)
    crit = critical.get(key) or (critical.get(fallback) if fallback else None)
    return Metric(metric.label, metric.value, metric.uom, warn, crit,
                  metric.minimum, metric.maximum)


def _root_metrics(checks: Mapping[str, Any], warning: Thresholds,
                  critical: Thresholds) -> list[Metric]:
    metrics = []
    for entry in _entries(checks, "roots:freeBytes"):
        value = entry.get("observedValue")
        if isinstance(value, int | float) and not isinstance(value, bool):
            label = f"free_{entry.get('componentId', '?')}"
            metrics.append(_with_thresholds(Metric(label, value, "B", minimum=0),
                                            label, warning, critical, fallback="free"))
    return metrics


def _count_metrics(checks: Mapping[str, Any], warning: Thresholds,
                   critical: Thresholds) -> list[Metric]:
    metrics = []
    for key, label in (("downloads:active", "downloads"), ("agents:healthy", "agents")):
        for entry in _entries(checks, key)[:1]:
            value = entry.get("observedValue")
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics.append(_with_thresholds(Metric(label, value, minimum=0),
                                                label, warning, critical))
    return metrics


def _entries(checks: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = checks.get(key)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _threshold_state(metric: Metric) -> State:
    if metric.crit is not None and metric.crit.alerts(metric.value):
        return State.CRITICAL
    if metric.warn is not None and metric.warn.alerts(metric.value):
        return State.WARNING
    return State.OK


def _failing_checks(checks: Mapping[str, Any]) -> list[str]:
    """``roots:freeBytes logs: warn (disk almost full)`` for every check that does not pass."""
    problems = []
    for key in sorted(checks):
        for entry in _entries(checks, key):
            status = entry.get("status")
            if status in ("warn", "fail"):
                component = f" {entry['componentId']}" if entry.get("componentId") else ""
                output = f" ({entry['output']})" if entry.get("output") else ""
                problems.append(f"{key}{component}: {status}{output}")
    return problems


def _headline(doc: Mapping[str, Any], checks: Mapping[str, Any], elapsed: float) -> str:
    kind = "coordinator" if "agents:healthy" in checks else "agent"
    name = doc.get("serviceId") or "?"
    who = kind if name == kind else f"{kind} {name}"
    parts = [f"{who} {doc.get('status')}"]
    version = doc.get("version")
    if version:
        parts[0] += f" (v{version})"
    roots = _entries(checks, "roots:freeBytes")
    if roots:
        parts.append(f"{len(roots)} root{'s' if len(roots) != 1 else ''}")
    nouns = (("agents:healthy", "healthy agents"), ("downloads:active", "active downloads"))
    for key, noun in nouns:
        for entry in _entries(checks, key)[:1]:
            parts.append(f"{entry.get('observedValue')} {noun}")
    parts.append(f"{elapsed:.3f}s")
    return ", ".join(parts)


def _show(metric: Metric) -> str:
    if metric.uom == "B":
        return human_bytes(metric.value)
    return f"{_number(metric.value)}{metric.uom}"


def _number(value: float) -> str:
    """Perfdata numbers: integers without a point, others without an exponent."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


# --- the command -----------------------------------------------------------------------


def health_url(url: str) -> str:
    """*url* itself when it names a health route, else ``<url>/health``."""
    path = url.split("?", 1)[0].rstrip("/")
    return url if path.endswith(("/health", "/healthz")) else join_url(url, "/health")


def run_check(
    url: str, options: HttpOptions, warning: Thresholds, critical: Thresholds,
    timeout_state: State = State.CRITICAL, clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Fetch the health document at *url* and evaluate it; never raises for a bad answer."""
    target = health_url(url)
    started = clock()
    try:
        with open_url(target, options, check_status=False,
                      headers={"Accept": "application/health+json"}) as response:
            status, body = response.status, response.read(HEALTH_BODY_LIMIT)
    except ConnectFailed as exc:
        state = timeout_state if exc.kind == "timeout" else (
            State.UNKNOWN if exc.kind == "resolve" else State.CRITICAL)
        return CheckResult(state, exc.message)
    except ClientError as exc:
        return CheckResult(State.UNKNOWN, exc.message)
    elapsed = clock() - started
    if status not in (200, 503):
        return CheckResult(State.UNKNOWN, f"{target} answered HTTP {status}, not a health document")
    try:
        doc = json.loads(body)
    except ValueError:
        return CheckResult(State.UNKNOWN, f"{target} did not answer JSON (HTTP {status})")
    if not isinstance(doc, dict):
        return CheckResult(State.UNKNOWN, f"{target} did not answer a JSON object")
    return evaluate(doc, elapsed, warning, critical)
