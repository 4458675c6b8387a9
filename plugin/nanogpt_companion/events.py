"""Per-user publish/subscribe for the server-sent event stream.

Services publish (catalogue refreshed, account polled, findings changed, a fix to apply live); each open
SSE stream is a subscriber with a bounded queue. A slow client must never stall a publisher or grow
memory without bound: when its queue is full the subscriber is marked overflowed and its stream ends, so
the extension reconnects and re-reads state over plain GETs.

Subscribers that identify as the ST extension mark the user's tab as open; the doctor uses that to decide
between a live fix (sent to the tab) and a file patch (ST would overwrite the file on its next save).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger(__name__)

ALL_USERS = "*"


@dataclass(frozen=True)
class Event:
    name: str
    data_json: bytes  # serialised once, shared by every subscriber

    def encode_sse(self) -> bytes:
        return b"event: " + self.name.encode() + b"\ndata: " + self.data_json + b"\n\n"


@dataclass(eq=False)
class Subscription:
    user: str
    is_extension: bool
    queue: asyncio.Queue[Event]
    overflowed: bool = False
    id: int = 0


@dataclass
class EventBus:
    queue_size: int = 256
    _subs: dict[str, set[Subscription]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _tab_listeners: list[Any] = field(default_factory=list)

    def publish(self, user: str, name: str, data: Any) -> int:
        """Send an event to one user's streams (or every stream with ``ALL_USERS``). Returns receivers."""
        event = Event(name, orjson.dumps(data))
        targets = (
            [s for subs in self._subs.values() for s in subs]
            if user == ALL_USERS
            else self._subs.get(user, ())
        )
        delivered = 0
        for sub in list(targets):
            if sub.overflowed:
                continue
            try:
                sub.queue.put_nowait(event)
                delivered += 1
            except asyncio.QueueFull:
                sub.overflowed = True
                log.warning(
                    "event stream %d for %s fell behind; closing it so it reconnects", sub.id, sub.user
                )
        return delivered

    @contextmanager
    def subscribe(self, user: str, *, is_extension: bool) -> Iterator[Subscription]:
        sub = Subscription(user, is_extension, asyncio.Queue(self.queue_size), id=next(self._ids))
        was_open = self.tab_open(user)
        self._subs.setdefault(user, set()).add(sub)
        if is_extension and not was_open:
            self._notify_tab(user, True)
        try:
            yield sub
        finally:
            subs = self._subs.get(user)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[user]
            if is_extension and not self.tab_open(user):
                self._notify_tab(user, False)

    def tab_open(self, user: str) -> bool:
        """True while an ST tab of this user holds an extension event stream."""
        return any(s.is_extension and not s.overflowed for s in self._subs.get(user, ()))

    def subscriber_count(self, user: str | None = None) -> int:
        if user is None:
            return sum(len(s) for s in self._subs.values())
        return len(self._subs.get(user, ()))

    def on_tab_change(self, callback: Any) -> None:
        """Register ``callback(user, open)``; the doctor re-plans pending fixes when a tab opens or closes."""
        self._tab_listeners.append(callback)

    def _notify_tab(self, user: str, is_open: bool) -> None:
        for callback in self._tab_listeners:
            try:
                callback(user, is_open)
            except Exception:
                log.exception("tab-change listener failed")
