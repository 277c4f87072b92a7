"""The browser page's files: package data in streamer/server/static/, answered over plain HTTP GET by the WebSocket server.

``GET /`` is the live meter (microphone -> ``/ingest``), ``GET /wall`` every live stream of the
server (``/feed``), ``GET /static/NAME`` their scripts and style. Files are read once, at start-up,
into memory; only names in the folder are served (no path from the request reaches the file
system); any other name is the server's 404. Each answer carries its Content-Type (JavaScript,
the AudioWorklet included, as ``text/javascript``), ``nosniff`` and, for pages, a
Content-Security-Policy that allows scripts, styles and connections from this server only.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static/"
PAGES = {"/": "index.html", "/wall": "wall.html"}  # path -> file
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
PAGE_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

Route = Callable[[ServerConnection, Request], Response]


class StaticFiles:
    """The page's files in memory; ``routes()`` maps each URL path to its answer (``EmoServer.routes``)."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            content_type = CONTENT_TYPES.get(path.suffix)
            if path.is_file() and content_type is not None:
                self.files[path.name] = (path.read_bytes(), content_type)

    def routes(self) -> dict[str, Route]:
        """``/``, ``/wall`` and ``/static/NAME`` for every file."""
        out = {path: self._route(name) for path, name in PAGES.items() if name in self.files}
        out.update({STATIC_PREFIX + name: self._route(name) for name in self.files})
        return out

    def _route(self, name: str) -> Route:
        def answer(connection: ServerConnection, request: Request) -> Response:
            return self.response(name)

        return answer

    def response(self, name: str) -> Response:
        body, content_type = self.files[name]
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "no-referrer"),
                ("Connection", "close"),
            ]
        )
        if content_type.startswith("text/html"):
            headers["Content-Security-Policy"] = PAGE_CSP
        return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)
