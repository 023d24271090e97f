"""Which agents exist: inline ``agents``, an ``agents_file`` (Prometheus file_sd) and
agents that register themselves — plus what the last health poll said about each.

Precedence when one name comes from several sources: ``static`` (the config file) wins
over ``file`` (agents_file), which wins over ``registered``. A registration for a name that
is already configured counts as a heartbeat (version, last seen) but cannot move its URL.

agents_file rules (file_sd format: ``[{"targets": [...], "labels": {...}}, ...]``, YAML or
JSON):

* a target is a URL (``https://node1:8701``) or ``host:port``; for ``host:port`` the
  scheme is the group's ``__scheme__`` label, else ``http``;
* the node name is the group's ``node`` label, else its ``name`` label, else its
  ``__meta_fleetzip_node`` label — a group with such a label must hold exactly one target;
  without one, the name is the target's host (``node1.example.com:8701`` → ``node1.example.com``);
  two targets giving the same name make the file invalid;
* labels whose name starts with ``__`` and the label that gave the name are not agent labels;
* the file is re-read when its mtime/size/inode changes (checked every
  ``agents_file_interval``) and on SIGHUP. A file that cannot be read or parsed keeps the
  last good list and logs why; a file missing at start gives an empty list (it may appear).

Registered agents expire ``registration.ttl`` seconds after their last heartbeat.
Labels used for selection are those the agent reports in ``/info`` overlaid with the
labels discovery gives (discovery wins).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from common.errors import ConfigError
from common.names import check_node_name
from coordinator.config import CoordinatorConfig
from coordinator.model import AgentRef

log = logging.getLogger(__name__)

Health = Literal["pass", "fail", "unknown"]
NAME_LABELS = ("node", "name", "__meta_fleetzip_node")
# libyaml's safe loader when PyYAML has it: 6x less CPU than the pure-Python one (500 groups:
# 14 ms instead of 89 ms), the same safe subset of YAML
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class AgentState:
    """What the coordinator has observed of one agent."""

    health: Health = "unknown"
    last_seen: float | None = None
    version: str | None = None
    error: str | None = None
    reported_labels: dict[str, str] = field(default_factory=dict)
    # What the agent's /info says it can do (release 0.2: "checksum", "deflate"); empty for
    # an agent of the previous release, or one not asked yet.
    features: frozenset[str] = frozenset()


# -- agents_file (file_sd) ------------------------------------------------------------


def parse_file_sd(data: Any) -> dict[str, AgentRef]:
    """Agents of a file_sd document; ValueError naming the group and target when bad."""
    if data is None:
        return {}
    if not isinstance(data, list):
        raise ValueError("the top level must be a list of {targets, labels} groups")
    agents: dict[str, AgentRef] = {}
    for index, group in enumerate(data):
        for agent in _parse_group(group, f"[{index}]"):
            if agent.name in agents:
                raise ValueError(f"{index}: duplicate node name {agent.name!r} "
                                 "(set a 'node' label per target to tell them apart)")
            agents[agent.name] = agent
    return agents


def _parse_group(group: Any, where: str) -> list[AgentRef]:
    if not isinstance(group, dict):
        raise ValueError(f"{where}: expected a mapping with 'targets' and 'labels'")
    unknown = sorted(set(group) - {"targets", "labels"})
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    targets, labels = group.get("targets"), group.get("labels") or {}
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{where}.targets: expected a list of URLs or host:port strings")
    if not isinstance(labels, dict):
        raise ValueError(f"{where}.labels: expected a mapping")
    labels = {str(k): str(v) for k, v in labels.items()}
    name_key = next((key for key in NAME_LABELS if labels.get(key)), None)
    if name_key is not None and len(targets) != 1:
        raise ValueError(f"{where}: a group with a {name_key!r} label must have one target")
    plain = {k: v for k, v in labels.items() if not k.startswith("__") and k not in NAME_LABELS}
    agents = []
    for target in targets:
        url, host = _target_url(target, labels.get("__scheme__", "http"), where)
        name = labels[name_key] if name_key else host
        try:
            check_node_name(name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        agents.append(AgentRef(name, url, plain, "file"))
    return agents


def _target_url(target: str, scheme: str, where: str) -> tuple[str, str]:
    """(base URL, host) of a target."""
    text = target.strip()
    if "://" not in text:
        text = f"{scheme}://{text}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: target {target!r} is not an http(s) URL or host:port")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{where}: target {target!r} has a bad port") from None
    return urllib.parse.urlunsplit(parts._replace(query="", fragment="")).rstrip("/"), \
        parts.hostname


def read_file_sd(path: str) -> dict[str, AgentRef]:
    """Parse *path* (YAML or JSON); OSError / ValueError when it is unusable."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.load(text, Loader=SAFE_LOADER)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot parse: {exc}") from None
    return parse_file_sd(data)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


# -- the registry ----------------------------------------------------------------------


class Registry:
    """All agents known now, by name, with their observed state."""

    def __init__(self, config: CoordinatorConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.static = {a.name: AgentRef(a.name, a.url.rstrip("/"), dict(a.labels), "static")
                       for a in config.agents}
        self.from_file: dict[str, AgentRef] = {}
        self.registered: dict[str, AgentRef] = {}
        self.expires: dict[str, float] = {}
        self.states: dict[str, AgentState] = {}
        self.file_error: str | None = None
        self._file_signature: tuple[int, int, int] | None = None

    # -- agents_file -------------------------------------------------------------------

    def load_file_at_start(self) -> None:
        """First read of agents_file: a bad file is a `ConfigError`, a missing one a warning."""
        path = self.config.agents_file
        if path is None:
            return
        if not os.path.exists(path):
            log.warning("agents_file %s does not exist yet; starting without it", path)
            return
        try:
            self._file_signature = _signature(path)
            self.from_file = read_file_sd(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(path, "agents_file", str(exc)) from None
        log.info("agents_file %s: %d agent(s)", path, len(self.from_file))

    def check_file(self, force: bool = False) -> bool:
        """Re-read agents_file when it changed (or *force*); False when it is bad."""
        path = self.config.agents_file
        if path is None:
            return True
        signature = _signature(path)
        if not force and signature == self._file_signature:
            return self.file_error is None
        self._file_signature = signature
        try:
            agents = read_file_sd(path)
        except (OSError, ValueError) as exc:
            self.file_error = f"{path}: {exc}"
            log.error("agents_file %s is invalid, keeping the last good list (%d agents): %s",
                      path, len(self.from_file), exc)
            return False
        self.file_error = None
        if agents != self.from_file:
            log.info("agents_file %s: %d agent(s)", path, len(agents))
        self.from_file = agents
        self._forget_vanished()
        return True

    # -- registration ------------------------------------------------------------------

    def register(self, name: str, url: str, labels: Mapping[str, str],
                 version: str | None) -> float:
        """Record a heartbeat; returns the TTL in seconds. Name and URL are checked by
        the caller (`parse_registration`)."""
        ttl = self.config.registration.ttl
        now = self.clock()
        if name not in self.static and name not in self.from_file:
            previous = self.registered.get(name)
            self.registered[name] = AgentRef(name, url, dict(labels), "registered")
            self.expires[name] = now + ttl
            if previous is None or previous.url != url:
                log.info("agent %s registered at %s", name, url)
                self.states[name] = AgentState()
        state = self.states.setdefault(name, AgentState())
        state.last_seen = now
        if version:
            state.version = version
        return ttl

    def deregister(self, name: str) -> bool:
        """Remove a registered agent; a configured one is marked down. False: unknown."""
        if name in self.registered:
            del self.registered[name]
            self.expires.pop(name, None)
            self.states.pop(name, None)
            log.info("agent %s deregistered", name)
            return True
        if name in self.static or name in self.from_file:
            state = self.states.setdefault(name, AgentState())
            state.health, state.error = "fail", "deregistered (agent shut down)"
            return True
        return False

    def expire(self) -> list[str]:
        """Drop registered agents whose TTL ran out; returns their names."""
        now = self.clock()
        gone = [name for name, until in self.expires.items() if until <= now]
        for name in gone:
            log.info("agent %s expired (no heartbeat for %.0fs)", name,
                     self.config.registration.ttl)
            del self.registered[name], self.expires[name]
            self.states.pop(name, None)
        return gone

    # -- queries -----------------------------------------------------------------------

    def agents(self) -> list[AgentRef]:
        """Every agent known now, sorted by name."""
        self.expire()
        merged = {**self.registered, **self.from_file, **self.static}
        return [merged[name] for name in sorted(merged)]

    def get(self, name: str) -> AgentRef | None:
        """The agent called *name* now (same precedence as `agents`), by dict lookups:
        the health poller asks this once per agent per round."""
        agent = self.static.get(name) or self.from_file.get(name)
        if agent is not None:
            return agent
        until = self.expires.get(name)
        if until is not None and until <= self.clock():
            self.expire()
        return self.registered.get(name)

    def state(self, name: str) -> AgentState:
        return self.states.setdefault(name, AgentState())

    def labels(self, agent: AgentRef) -> dict[str, str]:
        return {**self.state(agent.name).reported_labels, **agent.labels}

    def select(self, nodes: Iterable[str] = (), labels: Mapping[str, str] | None = None,
               ) -> list[AgentRef]:
        """Agents named in *nodes* (all when empty) whose labels include *labels*."""
        wanted = set(nodes)
        chosen = [a for a in self.agents() if not wanted or a.name in wanted]
        if labels:
            chosen = [a for a in chosen
                      if all(self.labels(a).get(k) == v for k, v in labels.items())]
        return chosen

    def counts(self) -> tuple[int, int]:
        """(known, healthy)."""
        agents = self.agents()
        healthy = sum(1 for a in agents if self.state(a.name).health == "pass")
        return len(agents), healthy

    def describe(self) -> list[dict[str, Any]]:
        """The ``agents`` list of ``GET /api/agents``."""
        return [self._describe(agent) for agent in self.agents()]

    def _describe(self, agent: AgentRef) -> dict[str, Any]:
        state = self.state(agent.name)
        return {
            "name": agent.name, "url": agent.url, "labels": self.labels(agent),
            "source": agent.source, "health": state.health,
            "last_seen": _iso(state.last_seen), "version": state.version, "error": state.error,
            "features": sorted(state.features),
        }

    def service_discovery(self) -> list[dict[str, Any]]:
        """The agents in Prometheus HTTP SD format (one target group per agent)."""
        groups = []
        for agent in self.agents():
            parts = urllib.parse.urlsplit(agent.url)
            labels = {"__scheme__": parts.scheme, "node": agent.name,
                      "fleetzip_source": agent.source}
            if parts.path and parts.path != "/":
                labels["__metrics_path__"] = parts.path.rstrip("/") + "/metrics"
            for key, value in self.labels(agent).items():
                labels.setdefault(_prom_label(key), value)
            groups.append({"targets": [parts.netloc], "labels": labels})
        return groups

    def _forget_vanished(self) -> None:
        known = {a.name for a in self.agents()}
        for name in [n for n in self.states if n not in known]:
            del self.states[name]


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _prom_label(key: str) -> str:
    """A valid Prometheus label name for *key* (``[a-zA-Z_][a-zA-Z0-9_]*``)."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in key)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"
