"""`make_app(config)`: the agent's Tornado application, with no module globals.

Everything a handler needs travels in the app settings: the frozen config's values, the
`AgentState` (slots, draining flag, counters), the token store, metrics, the shared
bandwidth bucket, the read budget and the executor used for file I/O. Several apps can share
a process.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import tornado.web

from agent.bandwidth import TokenBucket
from agent.budget import ReadBudget
from agent.checksum import ChecksumHandler, Checksums
from agent.config import AgentConfig
from agent.digests import ChecksumCache, DigestMetrics
from agent.files import FileHandler
from agent.health import (
    HealthHandler,
    IndexHandler,
    InfoHandler,
    LivezHandler,
    MetricsHandler,
    ReadyzHandler,
)
from agent.listing import ListHandler
from agent.metrics import AgentMetrics
from agent.state import AgentState
from common.auth import TokenStore
from common.web import NotFoundHandler, TokenAuthenticator

_SEGMENT = r"([^/]+)"


def routes() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    return [
        (r"/", IndexHandler),
        (rf"/files/{_SEGMENT}/(.+)", FileHandler),
        (rf"/checksum/{_SEGMENT}/(.+)", ChecksumHandler),
        (rf"/list/{_SEGMENT}/?", ListHandler),
        (rf"/list/{_SEGMENT}/(.+)", ListHandler),
        (r"/livez", LivezHandler),
        (r"/readyz", ReadyzHandler),
        (r"/healthz?", HealthHandler),
        (r"/info", InfoHandler),
        (r"/metrics", MetricsHandler),
    ]


def make_app(
    config: AgentConfig,
    *,
    tokens: TokenStore | None = None,
    state: AgentState | None = None,
    executor: Executor | None = None,
    bandwidth: TokenBucket | None = None,
    **settings: Any,
) -> tornado.web.Application:
    """The agent app. *tokens* defaults to ``config.token_file``; *executor* to the loop's."""
    tokens = tokens if tokens is not None else TokenStore.open(config.token_file)
    state = state or AgentState(max_downloads=config.max_concurrent_downloads)
    if bandwidth is None and config.max_bandwidth > 0:
        bandwidth = TokenBucket(config.max_bandwidth, burst=config.chunk_size)
    piece = bandwidth.piece_size(config.chunk_size) if bandwidth else config.chunk_size
    budget = ReadBudget(config.read_budget, slots=state.max_downloads, max_piece=piece)
    metrics = AgentMetrics(state, budget)
    labels = config.register.labels if config.register is not None else {}
    return tornado.web.Application(
        routes(),
        default_handler_class=NotFoundHandler,
        node=config.node,
        real_roots=config.real_roots,
        chunk_size=config.chunk_size,
        labels=labels,
        agent_state=state,
        agent_metrics=metrics,
        http_metrics=metrics.http,
        authenticator=TokenAuthenticator(tokens) if tokens.enabled else None,
        token_store=tokens,
        bandwidth=bandwidth,
        read_budget=budget,
        file_executor=executor,
        checksums=Checksums(ChecksumCache(), DigestMetrics(metrics.registry)),
        **settings,
    )
