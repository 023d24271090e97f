"""Who may call the coordinator: HTTP Basic users (salted PBKDF2) and bearer tokens.

A users_file holds one user a line::

    alice:pbkdf2_sha256$600000$<salt hex>$<hash hex>

Blank lines and lines starting with ``#`` are ignored. Make a line with
``python -m coordinator.users alice`` (the password is read from stdin, never argv).

Password checks are slow on purpose (PBKDF2), and a browser sends Basic credentials with
every request, so a verified ``(user, password)`` pair is remembered — as a SHA-256 of the
pair, never the password — until the next reload. Hashes and tokens are compared in
constant time.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hashlib
import hmac
import logging
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tornado.httputil import HTTPServerRequest

from common.auth import TokenStore, bearer_token

log = logging.getLogger(__name__)

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP 2023 advice for PBKDF2-HMAC-SHA256
MIN_ITERATIONS = 1_000
SALT_BYTES = 16
_CACHE_LIMIT = 1024  # remembered verified credentials; cleared when full or on reload


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


@functools.cache
def _unknown_user_hash() -> str:
    """A hash of a random password, compared against when the user name is unknown."""
    return hash_password(secrets.token_urlsafe(16))


@dataclass
class UserStore:
    """Basic-auth users; empty and disabled when no users_file is configured."""

    path: str | None
    users: Mapping[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)

    @classmethod
    def open(cls, path: str | None) -> UserStore:
        """Load *path* (None: no users). Raises OSError / ValueError on a bad file."""
        return cls(path, read_users(path) if path else {})

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def check(self, name: str, password: str) -> bool:
        encoded = self.users.get(name)
        if encoded is None:
            # Spend the same PBKDF2 work as for a known user, so the answer's timing does
            # not tell which user names exist.
            verify_password(password, _unknown_user_hash())
            return False
        key = hashlib.sha256(f"{name}\0{password}\0{encoded}".encode()).digest()
        if key in self._verified:
            return True
        if not verify_password(password, encoded):
            return False
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(key)
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
        self.users, self._verified = users, set()
        log.info("reloaded %d user(s) from %s", len(users), self.path)
        return True


class ClientAuthenticator:
    """Bearer tokens and/or Basic users; open when neither is configured.

    ``challenge`` lists Basic first when users exist, so a browser shows its login prompt.
    ``identify`` names the caller for the audit log: the Basic user, ``token`` or
    ``anonymous`` (auth off).
    """

    def __init__(self, tokens: TokenStore, users: UserStore) -> None:
        self.tokens = tokens
        self.users = users

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

    def check(self, request: HTTPServerRequest) -> bool:
        return self.identify(request) is not None

    def identify(self, request: HTTPServerRequest) -> str | None:
        """Who sent *request*, or None when its credentials are missing or wrong."""
        if not self.enabled:
            return "anonymous"
        header = request.headers.get("Authorization")
        if self.tokens.enabled and bearer_token(header) is not None:
            return "token" if self.tokens.check(header) else None
        credentials = basic_credentials(header)
        if self.users.enabled and credentials is not None:
            return credentials[0] if self.users.check(*credentials) else None
        return None

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
