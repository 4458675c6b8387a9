"""Who may talk to the service: Host check, strict CORS, bearer tokens, and uniform JSON errors.

Why a Host check on a loopback service: a web page can point a DNS name it controls at 127.0.0.1 (DNS
rebinding) and then read our answers same-origin. Requiring a loopback Host name defeats that. Why strict
CORS: any page the user visits may ``fetch`` 127.0.0.1; only SillyTavern's own origin may read answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import ApiError, error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
PUBLIC_PATHS = frozenset({"/health"})
TICKET_PATHS = frozenset({"/api/events"})
# If-None-Match: clients may revalidate the catalogue themselves; ETag is readable so the extension can
# tell a revalidated copy it already holds from a new one.
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-None-Match"
CORS_EXPOSE_HEADERS = "ETag"
CORS_ALLOW_METHODS = "GET, POST, PUT, OPTIONS"


@dataclass(frozen=True)
class AccessPolicy:
    origins: frozenset[str]
    hosts: frozenset[str] = field(default=LOOPBACK_HOSTS)

    @classmethod
    def build(
        cls,
        *,
        st_port: int,
        extra_origins: Iterable[str] = (),
        extra_hosts: Iterable[str] = (),
        bind_host: str = "",
    ) -> AccessPolicy:
        origins = {f"http://{h}:{st_port}" for h in ("localhost", "127.0.0.1", "[::1]")}
        origins.update(o.rstrip("/") for o in extra_origins)
        hosts = set(LOOPBACK_HOSTS) | {h.lower() for h in extra_hosts}
        if bind_host and bind_host not in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            hosts.add(bind_host.lower())
        return cls(frozenset(origins), frozenset(hosts))

    def host_allowed(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        host = host_header.strip().lower()
        if host.startswith("["):
            name = host[: host.find("]") + 1] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in self.hosts


def _cors_headers(origin: str, preflight: bool) -> dict[str, str]:
    if not preflight:  # the rest is only read from a preflight; a 304 should stay a few hundred bytes
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
        # Chromium's ceiling (2 h): the extension's cross-origin calls carry a token, so each new kind of
        # call is preflighted; within this time the answer is reused, also across page loads.
        "Access-Control-Max-Age": "7200",
    }


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    policy = request.app[keys.ACCESS]
    if not policy.host_allowed(request.headers.get("Host")):
        return error_response(421, "bad_host", "This service only answers requests addressed to localhost.")
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") not in policy.origins:
        return error_response(403, "origin_not_allowed", "This web page is not allowed to use the service.")
    if request.method == "OPTIONS":
        return web.Response(status=204)
    try:
        if request.path not in PUBLIC_PATHS:  # everything but /health, unknown paths included
            _authenticate(request)
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        response = _http_exception_to_json(exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(500, "internal", "The service hit an unexpected error; see its log.")
    return response


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: also covers streamed answers (SSE) that middleware sees too late."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") in request.app[keys.ACCESS].origins:
        response.headers.update(_cors_headers(origin, request.method == "OPTIONS"))
        vary = response.headers.get("Vary")  # keep a handler's own Vary (Accept-Encoding)
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def _authenticate(request: web.Request) -> None:
    users = request.app[keys.USERS]
    token: str | None = None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    elif request.path in TICKET_PATHS and "ticket" in request.query:
        handle = request.app[keys.TICKETS].redeem(request.query["ticket"])
        user = users.get(handle) if handle else None
        if user is None:
            raise ApiError(401, "invalid_token", "The event-stream ticket is unknown or has expired.")
        request[keys.CURRENT_USER] = user
        return
    if not token:
        raise ApiError(401, "missing_token", "Send the token from nanogpt-companion.json as a Bearer token.")
    user = users.authenticate(token)
    if user is None:
        raise ApiError(401, "invalid_token", "The token is not valid (the service may have been reset).")
    request[keys.CURRENT_USER] = user


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _http_exception_to_json(exc: web.HTTPException) -> web.Response:
    if exc.status < 400:
        return web.Response(status=exc.status, headers=exc.headers)
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason if exc.status != 413 else "The request body is too large."
    if exc.status == 404:
        message = "No such route."
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return error_response(exc.status, code, message, headers)
