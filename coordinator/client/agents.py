"""``fleetzip agents``: the coordinator's ``/api/agents`` as a table, or as JSON for scripts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from coordinator.client.http import ClientError, HttpOptions, get_json, join_url
from coordinator.client.summary import render_table

HEADERS = ("NAME", "URL", "LABELS", "HEALTH", "LAST SEEN", "VERSION", "SOURCE", "ERROR")


def fetch_agents(coordinator: str, options: HttpOptions) -> list[dict[str, Any]]:
    """The ``agents`` list of ``GET /api/agents``; ClientError when the answer is not one."""
    doc = get_json(join_url(coordinator, "/api/agents"), options)
    agents = doc.get("agents") if isinstance(doc, dict) else None
    if not isinstance(agents, list):
        raise ClientError(f"{coordinator}/api/agents did not answer an 'agents' list")
    return [agent for agent in agents if isinstance(agent, dict)]


def agents_table(agents: list[dict[str, Any]], now: dt.datetime | None = None) -> str:
    """One row per agent, sorted by name; last seen as an age (``12s ago``)."""
    now = now or dt.datetime.now(dt.UTC)
    rows = [
        (
            agent.get("name"),
            agent.get("url"),
            _labels(agent.get("labels")),
            agent.get("health", "unknown"),
            _age(agent.get("last_seen"), now),
            agent.get("version"),
            agent.get("source"),
            agent.get("error"),
        )
        for agent in sorted(agents, key=lambda a: str(a.get("name", "")))
    ]
    return render_table(HEADERS, rows)


def _labels(labels: object) -> str | None:
    if not isinstance(labels, Mapping) or not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _age(last_seen: object, now: dt.datetime) -> str | None:
    """``3s ago`` / ``5m ago`` / ``2h ago`` for an ISO 8601 time; the text itself if unparsable."""
    if not isinstance(last_seen, str) or not last_seen:
        return "never" if last_seen is None else None
    try:
        seen = dt.datetime.fromisoformat(last_seen.replace("Z", "+00:00"))
    except ValueError:
        return last_seen
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=dt.UTC)
    seconds = max(0, int((now - seen).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"
