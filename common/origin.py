"""An agent's address as registration accepts it: ``scheme://host:port`` and nothing else.

A registered URL is untrusted input that the coordinator later connects to with its agent
token, and builds request URLs from. So it may hold only the three parts a connection
needs — no path, query, fragment or user info that could change where a request goes
(``http://internal:80/secret#`` turned ``{url}/files/x`` into a request for ``/secret``).
The agent checks its own ``advertise_url`` with the same rules, so an operator learns of a
bad one at start rather than from refused heartbeats.

Hosts are an IP literal (``10.0.0.5``, ``[::1]``) or a DNS name. Legacy numeric spellings
that ``inet_aton`` accepts but are not dotted quads (``2130706433``, ``127.1``,
``0x7f.0.0.1``) are refused: they are addresses disguised as names and would slip past a
network check that only looks at IP literals.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from dataclasses import dataclass

MAX_URL = 300  # scheme + a 253-byte DNS name + port fits
SCHEMES = ("http", "https")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")  # "_": some hosts have it

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Origin:
    scheme: str  # "http" or "https"
    host: str  # lower-case DNS name, or an IP address without brackets
    port: int

    @property
    def address(self) -> IPAddress | None:
        """The host as an IP address (IPv4-mapped IPv6 unwrapped), None for a DNS name."""
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_origin(url: str) -> Origin:
    """The `Origin` of *url*; ValueError saying which part is not allowed.

    Accepted: ``http(s)://host:port`` with an optional trailing ``/``; the port is required.
    """
    if not isinstance(url, str):
        raise ValueError(f"expected a string, got {type(url).__name__}")
    if len(url) > MAX_URL:
        raise ValueError(f"longer than {MAX_URL} characters")
    if any(not ch.isprintable() or ch.isspace() for ch in url):
        raise ValueError("control characters or spaces are not allowed")
    if not url.isascii():
        raise ValueError("only ASCII is allowed (an international host name in punycode)")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("expected http://host:port or https://host:port")
    if "?" in rest:
        raise ValueError("a query ('?') is not allowed: give scheme://host:port only")
    if "#" in rest:
        raise ValueError("a fragment ('#') is not allowed: give scheme://host:port only")
    netloc, slash, path = rest.partition("/")
    if path or (slash and not netloc):
        raise ValueError("a path is not allowed: give scheme://host:port only")
    if "@" in netloc:
        raise ValueError("user info ('user@') is not allowed: give scheme://host:port only")
    parts = urllib.parse.urlsplit(f"{scheme.lower()}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port is None or port == 0 or not netloc.rsplit(":", 1)[-1].isdigit():
        raise ValueError("an explicit port from 1 to 65535 is required (scheme://host:port)")
    host = parts.hostname or ""
    return Origin(parts.scheme, _check_host(host, bracketed=netloc.startswith("[")), port)


def _check_host(host: str, *, bracketed: bool) -> str:
    if not host:
        raise ValueError("the host is missing")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if bracketed != isinstance(address, ipaddress.IPv6Address):
            raise ValueError("an IPv6 address must be in brackets, nothing else may be")
        if "%" in host:
            raise ValueError("an IPv6 zone id ('%') is not allowed")
        if address.is_unspecified or address.is_multicast:
            raise ValueError(f"{address} is not the address of one host")
        return str(address)
    if bracketed:
        raise ValueError(f"{host!r} in brackets is not an IPv6 address (zone ids are refused)")
    if _legacy_ipv4(host):
        raise ValueError(f"{host!r} is a non-standard spelling of an IPv4 address: "
                         "write it as a dotted quad (a.b.c.d)")
    name = host.rstrip(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{host!r} is not a valid host name or IP address")
    return name


def _legacy_ipv4(host: str) -> bool:
    """Whether the C resolver reads *host* as an IPv4 address (``127.1``, ``0x7f.1``)."""
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True
