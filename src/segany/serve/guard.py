"""Refusing cross-site requests that trigger work or change state (403), before they reach a route.

A page on another site can make a browser send simple requests (a form, ``fetch`` with
``mode: "no-cors"``) to the annotator on this machine. Browsers mark such requests: they send
``Sec-Fetch-Site: cross-site`` / ``same-site`` and an ``Origin`` that is not this server. Any
request other than GET/HEAD/OPTIONS carrying either mark is refused; clients that are not
browsers (curl, scripts) send neither and pass. The Host header itself is checked by
starlette's ``TrustedHostMiddleware`` (against DNS rebinding), added beside this in the app.
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def cross_site_reason(method: str, headers: Headers) -> str | None:
    """Why a request must be refused as cross-site, or None when it may go on."""
    if method.upper() in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return f"the browser says it comes from another site (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        host = headers.get("host", "").lower()
        netloc = parts.netloc.lower()
        default = _DEFAULT_PORTS.get(parts.scheme, "")
        if origin == "null" or not netloc or netloc.removesuffix(default) != host.removesuffix(default):
            return f"its Origin {origin} is not this server ({host or 'no Host header'})"
    return None


class SameOriginGuard:
    """ASGI middleware: 403 ``{"detail": ...}`` for state-changing requests from another site."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = None
        if scope["type"] == "http":
            reason = cross_site_reason(scope["method"], Headers(scope=scope))
        if reason is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": f"cross-site request refused: {reason}"}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
