"""Who may register which agent, at which address (SPEC §2 ``registration``, §4).

Registration is closed unless configured: it is on only when ``registration.enabled`` is
true (the default) *and* ``registration.tokens_file`` names the per-node tokens. Without
them ``POST /api/agents/register`` and ``DELETE /api/agents/{name}`` answer 403 and the
coordinator says at start why.

The tokens file holds one ``name token`` pair a line (``#`` comments and blank lines
ignored; a name may appear on several lines, for rotation). A presented token is compared
in constant time with every token in the file; the one it matches names the node that
holds it, and that node may register or delete only its own name (403 otherwise). So a
node that is taken over can move or remove itself, never another node.

A registered URL is ``scheme://host:port`` only (`common.origin`). With
``registration.allowed_networks`` set, its host must be an IP literal inside one of the
networks: a DNS name is refused, since what it resolves to can change after it was checked.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.auth import bearer_token
from common.errors import BadRequest, Forbidden, Unauthorized
from common.names import check_node_name
from common.origin import parse_origin
from coordinator.config import RegistrationConfig

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16  # `openssl rand -hex 16` gives 32
MAX_FIELD = 1024  # longest label name or value accepted from an agent
CHALLENGE = 'Bearer realm="fleetzip-agents"'


class RegistrationOff(Forbidden):
    code = "registration_off"


# -- the per-node tokens file -------------------------------------------------------------


def read_node_tokens(path: str | Path) -> tuple[tuple[str, str], ...]:
    """The ``(name, token)`` pairs of *path*; ValueError naming the line when it is bad."""
    pairs: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 2:
            raise ValueError(f"line {number}: expected 'name token'")
        name, token = fields
        try:
            check_node_name(name)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"line {number}: the token of {name} is shorter than "
                             f"{MIN_TOKEN_LENGTH} characters")
        if owners.setdefault(token, name) != name:
            raise ValueError(f"line {number}: {name} has the same token as {owners[token]}; "
                             "every node needs its own")
        pairs.append((name, token))
    if not pairs:
        raise ValueError(f"no 'name token' line in {path}")
    return tuple(pairs)


def token_owner(candidate: str, pairs: tuple[tuple[str, str], ...]) -> str | None:
    """The name whose token is *candidate*; compares against every token, in constant time."""
    given = candidate.encode("utf-8")
    owner = None
    for name, token in pairs:
        if hmac.compare_digest(given, token.encode("utf-8")):
            owner = name
    return owner


@dataclass
class NodeTokens:
    """``registration.tokens_file``, re-read on SIGHUP (a bad file keeps the old pairs)."""

    path: str
    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def open(cls, path: str) -> NodeTokens:
        return cls(path, read_node_tokens(path))

    def reload(self) -> bool:
        try:
            pairs = read_node_tokens(self.path)
        except (OSError, ValueError) as exc:
            log.error("registration.tokens_file reload failed, keeping the previous tokens: %s",
                      exc)
            return False
        self.pairs = pairs
        log.info("reloaded %d registration token(s) from %s", len(pairs), self.path)
        return True

    def owner(self, authorization: str | None) -> str | None:
        token = bearer_token(authorization)
        return token_owner(token, self.pairs) if token is not None else None


# -- the gate the register / deregister routes go through --------------------------------


class RegistrationGate:
    """Whether registration is on, who is asking, and whether the address is acceptable."""

    def __init__(self, config: RegistrationConfig) -> None:
        self.config = config
        self.networks = config.networks
        self.tokens = (NodeTokens.open(config.tokens_file)
                       if config.enabled and config.tokens_file else None)

    @property
    def off_reason(self) -> str | None:
        """Why registration is off, or None when it is on."""
        if not self.config.enabled:
            return "registration.enabled is false"
        if self.tokens is None:
            return ("no registration.tokens_file is set (per-node 'name token' lines); "
                    "without agent credentials anyone could register any address")
        return None

    def describe(self) -> str:
        """The line logged at start."""
        if self.off_reason is not None:
            return f"agent registration is off: {self.off_reason}"
        assert self.tokens is not None
        names = len({name for name, _ in self.tokens.pairs})
        networks = ", ".join(str(n) for n in self.networks) or "any network"
        return (f"agent registration is on for {names} node name(s) in {self.tokens.path}; "
                f"addresses allowed: {networks}")

    def authenticate(self, authorization: str | None) -> str:
        """The node that holds the presented token; `RegistrationOff` / `Unauthorized`."""
        if self.off_reason is not None or self.tokens is None:
            raise RegistrationOff(f"agent registration is off on this coordinator: "
                                  f"{self.off_reason}")
        owner = self.tokens.owner(authorization)
        if owner is None:
            raise Unauthorized("missing or invalid registration token",
                               headers={"WWW-Authenticate": CHALLENGE})
        return owner

    @staticmethod
    def authorize(owner: str, name: str) -> None:
        """A node may register or delete only its own name."""
        if owner != name:
            raise Forbidden(f"this registration token belongs to node {owner!r}; "
                            f"it may not register or delete {name!r}")

    def check_url(self, url: Any) -> str:
        """The canonical ``scheme://host:port`` of *url*; `BadRequest` naming ``url``."""
        try:
            origin = parse_origin(url)
        except ValueError as exc:
            raise BadRequest(f"url: {exc}", parameter="url") from None
        if self.networks:
            address = origin.address
            if address is None:
                raise BadRequest(
                    f"url: the host {origin.host!r} is a name; with "
                    "registration.allowed_networks set, register an IP address", parameter="url")
            if not any(address in network for network in self.networks
                       if network.version == address.version):
                raise BadRequest(f"url: {address} is not in registration.allowed_networks",
                                 parameter="url")
        return origin.url

    def reload(self) -> bool:
        return self.tokens.reload() if self.tokens is not None else True


def parse_registration(body: Any, gate: RegistrationGate,
                       ) -> tuple[str, str, dict[str, str], str | None]:
    """(name, url, labels, version) of a registration; `BadRequest` naming the field.

    Agents are untrusted input: every field must have the right type and no control
    character; nothing is coerced into shape.
    """
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object {name, url, labels, version}")
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"name: expected a string, got {name!r}", parameter="name")
    try:
        check_node_name(name)
    except ValueError as exc:
        raise BadRequest(f"name: {exc}", parameter="name") from None
    url = gate.check_url(body.get("url"))
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _is_clean(k) and _is_clean(v)
        and len(k) <= MAX_FIELD and len(v) <= MAX_FIELD
        for k, v in labels.items()
    ):
        raise BadRequest("labels: expected an object of strings", parameter="labels")
    version = body.get("version")
    if version is not None and (not isinstance(version, str) or not _is_clean(version)
                                or len(version) > 100):
        raise BadRequest("version: expected a short string", parameter="version")
    return name, url, dict(labels), version or None


def _is_clean(text: str) -> bool:
    """No control character and no whitespace but a plain space."""
    return all(ch == " " or (ch.isprintable() and not ch.isspace()) for ch in text)
