"""Bearer tokens: a token file with one token a line (several allowed, for rotation).

Tokens are compared in constant time against *every* configured token, so the time an
answer takes says nothing about how much of a guess was right, nor which token matched.
`TokenStore.reload()` (on SIGHUP) swaps the set atomically and keeps the old one when the
file is unreadable or empty.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def read_tokens(path: str | Path) -> tuple[str, ...]:
    """Tokens in *path*: one a line; blank lines and lines starting with ``#`` are ignored.

    Raises ValueError when the file holds no token, OSError when it cannot be read.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    tokens = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if not tokens:
        raise ValueError(f"no token in {path}")
    return tokens


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(candidate: str, tokens: tuple[str, ...]) -> bool:
    """True when *candidate* equals one of *tokens*; compares against all of them."""
    given = candidate.encode("utf-8")
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.encode("utf-8"))
    return found


@dataclass
class TokenStore:
    """The tokens a service accepts; empty when no token file is configured (auth off)."""

    path: str | None
    tokens: tuple[str, ...] = ()

    @classmethod
    def open(cls, path: str | None) -> TokenStore:
        """Load *path* (None: auth off). Raises OSError / ValueError on a bad file."""
        return cls(path, read_tokens(path) if path else ())

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def check(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` header may pass."""
        if not self.enabled:
            return True
        token = bearer_token(authorization)
        return token is not None and token_matches(token, self.tokens)

    def reload(self) -> bool:
        """Re-read the token file; on error keep the old tokens, log why and return False."""
        if not self.path:
            return True
        try:
            tokens = read_tokens(self.path)
        except (OSError, ValueError) as exc:
            log.error("token reload failed, keeping the previous tokens: %s", exc)
            return False
        self.tokens = tokens
        log.info("reloaded %d token(s) from %s", len(tokens), self.path)
        return True
