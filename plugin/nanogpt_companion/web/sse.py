"""The server-sent event stream and the short-lived tickets that let ``EventSource`` authenticate.

``EventSource`` cannot send an Authorization header, so the extension trades its bearer token for a
single-use ticket valid for a minute and opens ``/api/events?ticket=...``; the token itself never appears
in a URL (URLs end up in logs and history).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from nanogpt_companion import API_VERSION, __version__
from nanogpt_companion.web import keys

PING_INTERVAL = 15.0
TICKET_TTL = 60.0
MAX_TICKETS = 1024


@dataclass
class TicketBook:
    ttl: float = TICKET_TTL
    clock: Callable[[], float] = time.monotonic
    _tickets: dict[str, tuple[str, float]] = field(default_factory=dict)

    def issue(self, handle: str) -> str:
        self._expire()
        if (
            len(self._tickets) >= MAX_TICKETS
        ):  # bounded: a client looping on ticket requests cannot grow memory
            oldest = min(self._tickets, key=lambda t: self._tickets[t][1])
            del self._tickets[oldest]
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = (handle, self.clock() + self.ttl)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        self._expire()
        entry = self._tickets.pop(ticket, None)
        return entry[0] if entry else None

    def _expire(self) -> None:
        now = self.clock()
        for ticket in [t for t, (_, exp) in self._tickets.items() if exp <= now]:
            del self._tickets[ticket]


async def issue_ticket(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    ticket = request.app[keys.TICKETS].issue(user.handle)
    body = orjson.dumps({"ticket": ticket, "expires_in": int(request.app[keys.TICKETS].ttl)})
    return web.Response(body=body, content_type="application/json")


async def event_stream(request: web.Request) -> web.StreamResponse:
    user = request[keys.CURRENT_USER]
    bus = request.app[keys.BUS]
    stopping = request.app[keys.STOPPING]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    is_extension = request.query.get("client") == "extension"
    with bus.subscribe(user.handle, is_extension=is_extension) as sub, contextlib.suppress(ConnectionError):
        hello = {"user": user.handle, "version": __version__, "api_version": API_VERSION}
        await response.write(b"retry: 3000\nevent: hello\ndata: " + orjson.dumps(hello) + b"\n\n")
        stop_wait = asyncio.ensure_future(stopping.wait())
        try:
            while not sub.overflowed and not stopping.is_set():
                get = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait(
                    {get, stop_wait}, timeout=PING_INTERVAL, return_when="FIRST_COMPLETED"
                )
                if get in done:
                    await response.write(get.result().encode_sse())
                    continue
                get.cancel()
                if not done:
                    await response.write(b": ping\n\n")
        finally:
            stop_wait.cancel()
    return response
