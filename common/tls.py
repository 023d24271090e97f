"""TLS settings shared by agent and coordinator: server-side contexts, optional mutual TLS."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from common.config import FieldError


@dataclass(frozen=True)
class TlsConfig:
    """`cert` and `key` in PEM; `client_ca` turns on mutual TLS (clients must present a cert)."""

    cert: str
    key: str
    client_ca: str | None = None

    def __post_init__(self) -> None:
        for name in ("cert", "key", "client_ca"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                problem = "file does not exist" if not os.path.exists(path) else "not readable"
                raise FieldError(name, f"{problem}: {path}")
        try:
            self.server_context()
        except (ssl.SSLError, OSError) as exc:
            raise FieldError("cert", f"cannot load the certificate and key: {exc}") from None

    def server_context(self) -> ssl.SSLContext:
        """A server context; raises ssl.SSLError / OSError if the files are not valid PEM."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            context.load_verify_locations(self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context
