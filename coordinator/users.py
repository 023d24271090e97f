"""Who may call the coordinator: HTTP Basic users (salted PBKDF2) and bearer tokens.

A users_file holds one user a line::

    alice:pbkdf2_sha256$600000$<salt hex>$<hash hex>

Blank lines and lines starting with ``#`` are ignored. Make a line with
``python -m coordinator.users alice`` (the password is read from stdin, never argv).

Password checks are slow on purpose (PBKDF2, ~0.3 s of CPU at 600,000 iterations), so they
run in a thread, never on the event loop: ten wrong passwords in parallel once froze
``/livez`` and every running download for 3 s. A browser sends Basic credentials with every
request, so a verified ``(user, password)`` pair is remembered — as an HMAC under a
per-process random key, never the password — until the next reload. An unknown user name
is checked against a hash of the same cost. Wrong passwords are counted per client address
(`FailureLimiter`): past ``FAILURE_LIMIT`` in ``FAILURE_WINDOW`` the address gets 429 with
``Retry-After`` for any password not verified before. Hashes and tokens are compared in
constant time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from tornado.httputil import HTTPServerRequest

from common.auth import TokenStore, bearer_token
from common.errors import TooManyRequests

log = logging.getLogger(__name__)

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP 2023 advice for PBKDF2-HMAC-SHA256
MIN_ITERATIONS = 1_000
SALT_BYTES = 16
CACHE_SIZE = 256  # verified credentials remembered (a browser sends them with every request)
FAILURE_LIMIT = 10  # wrong passwords per client address within FAILURE_WINDOW, then 429
FAILURE_WINDOW = 60.0  # seconds
TRACKED_ADDRESSES = 4096  # client addresses whose failures are remembered
PENDING_CHECKS = 32  # password checks queued or running at once, over all clients


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` for *password*."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether *password* matches the ``pbkdf2_sha256$…`` string *encoded*."""
    _scheme, iterations, salt, expected = _split_hash(encoded)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


def _split_hash(encoded: str) -> tuple[str, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != SCHEME:
        raise ValueError(f"expected {SCHEME}$<iterations>$<salt>$<hash>")
    try:
        iterations = int(parts[1])
        salt, digest = bytes.fromhex(parts[2]), bytes.fromhex(parts[3])
    except ValueError:
        raise ValueError("iterations must be a number, salt and hash hexadecimal") from None
    if iterations < MIN_ITERATIONS or not salt or len(digest) != 32:
        raise ValueError(f"need at least {MIN_ITERATIONS} iterations, a salt and a 32-byte hash")
    return parts[0], iterations, salt, digest


def read_users(path: str | Path) -> dict[str, str]:
    """``{name: hash}`` from a users file; ValueError naming the line when one is bad."""
    users: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        try:
            if not sep or not name:
                raise ValueError("expected name:pbkdf2_sha256$<iterations>$<salt>$<hash>")
            _split_hash(encoded)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        users[name] = encoded
    if not users:
        raise ValueError("no user in the file")
    return users


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """``(name, password)`` of an ``Authorization: Basic`` header, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


@dataclass(frozen=True)
class Caller:
    """Who sent a request: ``name`` for the audit log (the Basic user, ``token`` or
    ``anonymous``), ``key`` for per-caller limits (``user:<name>``, ``token:<keyed hash of
    the token>``, or ``address:<client IP>`` when auth is off)."""

    name: str
    key: str


def _unknown_user_hash(users: Mapping[str, str]) -> str:
    """A hash no password matches, with the users' highest iteration count: checking an
    unknown name costs what checking a known one costs, so timing tells no names."""
    iterations = max((_split_hash(e)[1] for e in users.values()), default=DEFAULT_ITERATIONS)
    digest = secrets.token_bytes(32)
    return f"{SCHEME}${iterations}${secrets.token_bytes(SALT_BYTES).hex()}${digest.hex()}"


@dataclass
class UserStore:
    """Basic-auth users; empty and disabled when no users_file is configured.

    PBKDF2 runs in *executor* (one thread by default), never on the event loop. A verified
    ``(name, password)`` is remembered as an HMAC under a key that lives only in this
    process's memory — never the password — in a cache of `CACHE_SIZE` entries (least
    recently used dropped first), emptied on reload.
    """

    path: str | None
    users: Mapping[str, str] = field(default_factory=dict)
    executor: Executor | None = None
    _verified: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _unknown: str = ""

    def __post_init__(self) -> None:
        self._unknown = _unknown_user_hash(self.users)

    @classmethod
    def open(cls, path: str | None, executor: Executor | None = None) -> UserStore:
        """Load *path* (None: no users). Raises OSError / ValueError on a bad file."""
        return cls(path, read_users(path) if path else {}, executor)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _cache_key(self, name: str, password: str) -> bytes:
        encoded = self.users.get(name, "")
        message = f"{name}\0{password}\0{encoded}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def cached(self, name: str, password: str) -> bool:
        """Whether this pair was verified before (no hashing: cheap, loop-safe)."""
        key = self._cache_key(name, password)
        if key not in self._verified:
            return False
        self._verified.move_to_end(key)
        return True

    async def check(self, name: str, password: str) -> bool:
        """Whether *password* is *name*'s; the PBKDF2 runs in the executor."""
        if self.cached(name, password):
            return True
        encoded = self.users.get(name)
        loop = asyncio.get_running_loop()
        matches = await loop.run_in_executor(self.executor, verify_password, password,
                                             encoded if encoded is not None else self._unknown)
        if not matches or encoded is None or self.users.get(name) != encoded:
            return False
        self._verified[self._cache_key(name, password)] = None
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return True

    def reload(self) -> bool:
        """Re-read the file; on error keep the old users, log why and return False."""
        if not self.path:
            return True
        try:
            users = read_users(self.path)
        except (OSError, ValueError) as exc:
            log.error("users reload failed, keeping the previous users: %s: %s", self.path, exc)
            return False
        self.users, self._verified = users, OrderedDict()
        self._unknown = _unknown_user_hash(users)
        log.info("reloaded %d user(s) from %s", len(users), self.path)
        return True


class FailureLimiter:
    """Wrong passwords per client address: at most *limit* within *window* seconds.

    Checks still running count as failures until they end, so a burst of parallel guesses
    is cut at *limit* too. Past the limit the address gets `TooManyRequests` (429, with
    ``Retry-After`` until its oldest failure expires). At most *addresses* addresses are
    tracked (the least recently failed dropped first), and at most *pending* checks run
    at once over all addresses: the memory and the hashing queue stay bounded.
    """

    def __init__(self, *, limit: int = FAILURE_LIMIT, window: float = FAILURE_WINDOW,
                 addresses: int = TRACKED_ADDRESSES, pending: int = PENDING_CHECKS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.addresses, self.max_pending = limit, window, addresses, \
            pending
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending: dict[str, int] = {}

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address, deque())
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            self._failures.pop(address, None)
        return failures

    def admit(self, address: str) -> None:
        """Raise `TooManyRequests` when *address* may not have one more check now."""
        failures = self._recent(address)
        if len(failures) + self._pending.get(address, 0) >= self.limit:
            wait = failures[0] + self.window - self.clock() if failures else 1.0
            raise TooManyRequests(
                f"too many wrong passwords from {address}: at most {self.limit} in "
                f"{self.window:.0f}s; retry later", retry_after=max(1, math.ceil(wait)))
        if sum(self._pending.values()) >= self.max_pending:
            raise TooManyRequests("too many password checks in progress; retry later")

    @contextlib.contextmanager
    def checking(self, address: str) -> Iterator[None]:
        """Count a check of *address* as pending while the block runs."""
        self._pending[address] = self._pending.get(address, 0) + 1
        try:
            yield
        finally:
            self._pending[address] -= 1
            if not self._pending[address]:
                del self._pending[address]

    def failed(self, address: str) -> None:
        failures = self._recent(address)
        failures.append(self.clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > self.addresses:
            self._failures.popitem(last=False)


class ClientAuthenticator:
    """Bearer tokens and/or Basic users; open when neither is configured.

    ``challenge`` lists Basic first when users exist, so a browser shows its login prompt.
    `authenticate` names the `Caller`. Wrong Basic passwords count against the client
    address in a `FailureLimiter` (passwords are chosen by people and costly to check;
    tokens are generated secrets checked in constant time for next to nothing, so they are
    not limited). A password verified before passes even from an address past its limit
    (it costs no hashing): guessing from a shared address cannot lock out a signed-in
    browser there.
    """

    def __init__(self, tokens: TokenStore, users: UserStore,
                 limiter: FailureLimiter | None = None) -> None:
        self.tokens = tokens
        self.users = users
        self.limiter = limiter or FailureLimiter()
        self._token_key = secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        return self.tokens.enabled or self.users.enabled

    @property
    def challenge(self) -> str:
        schemes = []
        if self.users.enabled:
            schemes.append('Basic realm="fleetzip", charset="UTF-8"')
        if self.tokens.enabled or not schemes:
            schemes.append('Bearer realm="fleetzip"')
        return ", ".join(schemes)

    async def authenticate(self, request: HTTPServerRequest) -> Caller | None:
        """Who sent *request*; None when its credentials are missing or wrong,
        `TooManyRequests` when its address failed too often."""
        address = request.remote_ip or "unknown"
        if not self.enabled:
            return Caller("anonymous", f"address:{address}")
        header = request.headers.get("Authorization")
        token = bearer_token(header) if self.tokens.enabled else None
        if token is not None:
            if not self.tokens.check(header):
                return None
            return Caller("token", "token:" + self._token_id(token))
        credentials = basic_credentials(header) if self.users.enabled else None
        if credentials is None:
            return None
        name = credentials[0]
        if self.users.cached(*credentials):
            return Caller(name, f"user:{name}")
        self.limiter.admit(address)
        with self.limiter.checking(address):
            if await self.users.check(*credentials):
                return Caller(name, f"user:{name}")
        self.limiter.failed(address)
        log.info("wrong password for %r from %s", name[:64], address)
        return None

    def _token_id(self, token: str) -> str:
        """Tells tokens apart for per-caller limits without keeping one in clear."""
        return hmac.new(self._token_key, token.encode(), hashlib.sha256).hexdigest()[:16]

    def reload(self) -> bool:
        return self.tokens.reload() & self.users.reload()


def main(argv: list[str] | None = None) -> int:
    """Print a users_file line for NAME; the password comes from stdin (first line)."""
    parser = argparse.ArgumentParser(
        prog="python -m coordinator.users",
        description="Make a users_file line; reads the password from stdin.",
    )
    parser.add_argument("name", help="user name (no ':')")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    if ":" in args.name or not args.name.strip():
        parser.error("the name must be non-empty and hold no ':'")
    if args.iterations < MIN_ITERATIONS:
        parser.error(f"--iterations must be at least {MIN_ITERATIONS}")
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        parser.error("empty password")
    print(f"{args.name}:{hash_password(password, iterations=args.iterations)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
