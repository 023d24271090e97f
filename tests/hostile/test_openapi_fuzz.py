"""schemathesis against docs/openapi.yaml: generated requests to a real agent / coordinator.

Each operation gets a bounded number of generated requests (valid and invalid ones); every
answer must be below 500, an error must be the JSON error shape, and a success must match
the documented response schema. This also keeps docs/openapi.yaml honest: when the code
and the description disagree, a test here fails.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.hostile.conftest import REGISTER_TOKEN, Target

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

schema = schemathesis.openapi.from_path(SPEC)
agent_schema = schema.include(tag_regex="^(agent|both)$")
coordinator_schema = schema.include(tag_regex="^(coordinator|both)$").exclude(
    path_regex="^/api/(download|agents/register)$"  # see below / test_coordinator_hostile
)


def check_answer(target: Target, case: Any, response: Any) -> None:
    raw = response.content or b""
    assert target.marker not in raw, "a byte from outside a root was served"
    assert str(target.base_dir).encode() not in raw, "a filesystem path leaked"
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: {raw[:300]!r}"
    )
    if response.status_code >= 400 and case.method != "HEAD" and response.status_code != 431:
        body = json.loads(raw)
        assert body["error"]["code"] and body["error"]["message"], raw
    if response.status_code < 300:
        case.validate_response(response)


@pytest.mark.filterwarnings("ignore")
@agent_schema.parametrize()
@FUZZ
def test_agent_api(case: Any, agent_target: Target) -> None:
    base = f"http://{agent_target.host}:{agent_target.port}"
    response = case.call(base_url=base, headers={"Authorization": f"Bearer {agent_target.token}"},
                         timeout=10)
    check_answer(agent_target, case, response)


@pytest.mark.filterwarnings("ignore")
@coordinator_schema.parametrize()
@FUZZ
def test_coordinator_api(case: Any, coordinator_target: Target) -> None:
    base = f"http://{coordinator_target.host}:{coordinator_target.port}"
    response = case.call(base_url=base,
                         headers={"Authorization": f"Bearer {coordinator_target.token}"},
                         timeout=10)
    check_answer(coordinator_target, case, response)



@FUZZ
@given(case=schema["/api/agents/register"]["POST"].as_strategy(
    generation_mode=schemathesis.GenerationMode.NEGATIVE))
def test_coordinator_registration_api(case: Any, coordinator_target: Target) -> None:
    """Negative cases of registration (regression: a body without "name" registered an
    agent called "None")."""
    base = f"http://{coordinator_target.host}:{coordinator_target.port}"
    register_auth = {"Authorization": f"Bearer {REGISTER_TOKEN}"}  # node "ok"'s own token
    try:
        response = case.call(base_url=base, headers=register_auth, timeout=10)
        check_answer(coordinator_target, case, response)
    finally:  # keep the shared coordinator's agent list clean for the other tests
        auth = {"Authorization": f"Bearer {coordinator_target.token}"}
        agents = json.loads(urllib.request.urlopen(urllib.request.Request(
            base + "/api/agents", headers=auth), timeout=10).read())["agents"]
        for agent in agents:
            if agent["source"] == "registered":
                request = urllib.request.Request(
                    base + "/api/agents/" + urllib.parse.quote(agent["name"]), method="DELETE",
                    headers=register_auth)
                urllib.request.urlopen(request, timeout=10).read()
