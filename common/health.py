"""The ``application/health+json`` format (IETF draft-inadarei-api-health-check).

Only names, statuses and numbers go in: health routes are open to monitoring and must
not reveal paths.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

HEALTH_CONTENT_TYPE = "application/health+json"
Status = Literal["pass", "warn", "fail"]
_RANK = {"pass": 0, "warn": 1, "fail": 2}


def worst(statuses: Iterable[Status]) -> Status:
    """The worst of *statuses*; ``pass`` when there are none."""
    result: Status = "pass"
    for status in statuses:
        if _RANK[status] > _RANK[result]:
            result = status
    return result


def check(
    status: Status,
    *,
    component_id: str | None = None,
    observed_value: Any = None,
    observed_unit: str | None = None,
    output: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """One entry of a ``checks`` list."""
    entry: dict[str, Any] = {"status": status}
    if component_id is not None:
        entry["componentId"] = component_id
    if observed_value is not None:
        entry["observedValue"] = observed_value
    if observed_unit is not None:
        entry["observedUnit"] = observed_unit
    if output:
        entry["output"] = output
    entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return entry


def document(
    *,
    service_id: str,
    version: str,
    description: str,
    checks: Mapping[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """A health document whose overall status is the worst of its checks."""
    overall = worst(entry["status"] for entries in checks.values() for entry in entries)
    return {
        "status": overall,
        "version": version,
        "serviceId": service_id,
        "description": description,
        "checks": dict(checks),
    }
