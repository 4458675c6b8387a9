"""Conditional and compressed answers for bodies built once per snapshot (the catalogue).

Why: the extension loads the catalogue on every ST page load. With an ETag it keeps its copy and pays a
304 (a few hundred bytes) while nothing changed; when something did, it gets the gzip body, compressed
once per snapshot and variant rather than per request.
"""

from __future__ import annotations

from functools import lru_cache

from aiohttp import web

from nanogpt_companion.catalog_snapshot import Body, Encoding

# Validators and compression are per user and must be rechecked on every use (the catalogue can change
# at any refresh), but a browser may keep the copy: no-cache, not no-store.
CACHE_CONTROL = "private, no-cache"


@lru_cache(maxsize=64)  # a browser sends the same few strings on every request
def accepted_encoding(header: str | None) -> Encoding:
    """``gzip`` when the client accepts it (``gzip``, ``x-gzip`` or ``*`` with a non-zero q), else plain."""
    if not header:
        return "identity"
    star: bool | None = None
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name in ("gzip", "x-gzip"):
            return "gzip" if q > 0 else "identity"
        if name == "*":
            star = q > 0
    return "gzip" if star else "identity"


async def serve_body(request: web.Request, body: Body) -> web.Response:
    """200 with the body in the best coding the client takes, or 304 when its copy is current."""
    encoding = accepted_encoding(request.headers.get("Accept-Encoding"))
    headers = {
        "ETag": body.etag(encoding),
        "Cache-Control": CACHE_CONTROL,
        "Vary": "Accept-Encoding",
    }
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and body.matches(if_none_match):
        return web.Response(status=304, headers=headers)
    if encoding == "gzip":
        headers["Content-Encoding"] = "gzip"
        data = body.gzip if body.gzip is not None else await body.gzipped()
    else:
        data = body.identity()
    return web.Response(body=data, content_type="application/json", headers=headers)
