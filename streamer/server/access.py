"""Who may connect: the bearer token, the allowed browser Origins, and the warning for an exposed server.

Checked in the WebSocket handshake (``streamer.server.app.EmoServer.process_request``), before any
audio is read. Tokens are compared in constant time. Browsers are let in from the ``--allow-origin``
list and from this server's own page on a loopback address (``http://127.0.0.1:PORT``,
``http://localhost:PORT``, ``http://[::1]:PORT`` with the port the server bound): never from "any
Origin equal to the Host header", which a DNS-rebinding page controls.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, replace

from websockets.datastructures import Headers

TOKEN_ENV = "EMOSTREAM_TOKEN"


@dataclass(frozen=True, slots=True)
class Access:
    """Who may connect: the bearer token (None: anyone) and the browser Origins allowed."""

    token: str | None = None
    allow_origins: tuple[str, ...] = ()
    server_port: int | None = None  # set once bound: the server's own loopback page is allowed

    def for_port(self, port: int) -> Access:
        """The same rules, plus the server's own page on loopback at ``port``."""
        return replace(self, server_port=int(port))

    @property
    def own_origins(self) -> tuple[str, ...]:
        if self.server_port is None:
            return ()
        return tuple(f"http://{host}:{self.server_port}" for host in ("127.0.0.1", "localhost", "[::1]"))

    def token_ok(self, headers: Headers, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        offered = [v[7:].strip() for v in headers.get_all("Authorization") if v[:7].lower() == "bearer "]
        offered += query.get("token", [])
        ok = False
        for candidate in offered:  # compare every candidate in constant time, no early exit
            ok |= hmac.compare_digest(candidate.encode(), expected)
        return ok

    def origin_ok(self, headers: Headers) -> bool:
        origins = headers.get_all("Origin")
        if not origins:
            return True  # not a browser
        return len(origins) == 1 and (origins[0] in self.allow_origins or origins[0] in self.own_origins)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning logged when the server is reachable from other machines without a token."""
    if token is not None or is_loopback(host):
        return None
    return (
        f"serving on {host}, which is not a loopback address, WITHOUT a token: anyone who can reach this port "
        f"can stream audio and read every estimate. Set --token or ${TOKEN_ENV}."
    )
