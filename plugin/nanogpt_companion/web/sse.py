"""The server-sent event stream and the short-lived tickets that let ``EventSource`` authenticate.

``EventSource`` cannot send an Authorization header, so the extension trades its bearer token for a
single-use ticket valid for a minute and opens ``/api/events?ticket=...``; the token itself never appears
in a URL (URLs end up in logs and history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from nanogpt_companion import API_VERSION, __version__
from nanogpt_companion.web import keys
from nanogpt_companion.web.handlers.catalog import extension_list_etag

log = logging.getLogger(__name__)

PING_INTERVAL = 15.0
TICKET_TTL = 60.0
# Per user: a tab needs one ticket per (re)connect, a handful at most within a minute. A client looping on
# ticket requests only evicts its own user's oldest tickets, never another user's (one global pool did).
MAX_TICKETS_PER_USER = 16


@dataclass
class TicketBook:
    ttl: float = TICKET_TTL
    per_user: int = MAX_TICKETS_PER_USER
    clock: Callable[[], float] = time.monotonic
    _tickets: dict[str, tuple[str, float]] = field(default_factory=dict)  # ticket -> (handle, expiry)
    _by_user: dict[str, dict[str, None]] = field(default_factory=dict)  # handle -> its tickets, oldest first

    def issue(self, handle: str) -> str:
        self._expire()
        mine = self._by_user.setdefault(handle, {})
        while len(mine) >= self.per_user:
            oldest = next(iter(mine))
            del mine[oldest]
            del self._tickets[oldest]
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = (handle, self.clock() + self.ttl)
        mine[ticket] = None
        return ticket

    def redeem(self, ticket: str) -> str | None:
        self._expire()
        entry = self._tickets.pop(ticket, None)
        if entry is None:
            return None
        self._forget(entry[0], ticket)
        return entry[0]

    def __len__(self) -> int:
        return len(self._tickets)

    def _forget(self, handle: str, ticket: str) -> None:
        mine = self._by_user.get(handle)
        if mine is not None:
            mine.pop(ticket, None)
            if not mine:
                del self._by_user[handle]

    def _expire(self) -> None:
        now = self.clock()
        for ticket in [t for t, (_, exp) in self._tickets.items() if exp <= now]:
            handle, _ = self._tickets.pop(ticket)
            self._forget(handle, ticket)


async def _catalog_etag(app: web.Application, handle: str) -> str | None:
    """The hello goes out whatever state the catalogue is in: without a tag the page simply asks."""
    try:
        return await extension_list_etag(app, handle)
    except Exception:
        log.exception("could not name the catalogue's version in the event stream's hello")
        return None


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
        # Inside the subscription: a catalogue change after this ETag was taken still reaches the client as
        # a `catalog` event on this stream.
        hello = {
            "user": user.handle,
            "version": __version__,
            "api_version": API_VERSION,
            "catalog_etag": await _catalog_etag(request.app, user.handle),
        }
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
