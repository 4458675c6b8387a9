"""Which NanoGPT key each ST user's requests use, looked up off the event loop.

Order (DESIGN.md, issue 10 item 13): the configured key (handled by the registry), then the user's
``api_key_nanogpt``, then the key of the slot the active connection uses when that slot's URL is
NanoGPT's, then the other such slot. NanoGPT's guide puts the key in ST's Custom (OpenAI-compatible) key
(``api_key_custom``, URL in ``oai_settings.custom_url``) or, for its Text Completion method, the Generic
key (``api_key_generic``, URL in ``textgenerationwebui_settings.server_urls.generic``). ST reads them by
those names for those connections in 1.13.5 (src/endpoints/backends/chat-completions.js:1405,
src/additional-headers.js:181), 1.18.0 and 1.19.0. A slot whose URL is not NanoGPT's holds some other
provider's key, which is never sent to NanoGPT.

Why a worker thread with a deadline: ``secrets.json`` and ``settings.json`` are the user's files; a slow
disk must not stall the event loop, and one user's stuck file must not hold up anyone else. Each user has
at most one lookup in flight; callers wait for it at most ``KEY_LOOKUP_TIMEOUT`` and then go on with the
last key known. Why ``KEY_FRESH_FOR``: every API request needs its caller's key; a lookup younger than that
is answered from memory (no thread hop, no system call) at thousands of requests a second. The watcher
asks for a fresh lookup the moment ``secrets.json`` or ``settings.json`` changes, so a rotated key is
noticed at once; without the watcher, within that second.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.nanogpt.endpoints import parse_nanogpt_url
from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import STDataError
from nanogpt_companion.sillytavern.secrets import CUSTOM_SECRET, GENERIC_SECRET, NANOGPT_SECRET, read_secrets

log = logging.getLogger(__name__)

KEY_LOOKUP_TIMEOUT = 5.0
KEY_FRESH_FOR = 1.0
Signature = tuple[int, int, int, int]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def nanogpt_key_slots(settings: Any) -> list[str]:
    """The secret names (other than ``api_key_nanogpt``) whose URL points at NanoGPT, active one first.

    Active: Chat Completion (``main_api`` "openai") with the Custom source, or Text Completion
    (``main_api`` "textgenerationwebui") with the Generic type.
    """
    settings = _mapping(settings)
    oai = _mapping(settings.get("oai_settings")) or settings
    textgen = _mapping(settings.get("textgenerationwebui_settings"))
    generic_url = _mapping(textgen.get("server_urls")).get("generic")
    points = {
        CUSTOM_SECRET: parse_nanogpt_url(oai.get("custom_url")) is not None,
        GENERIC_SECRET: parse_nanogpt_url(generic_url, for_text_completion=True) is not None,
    }
    main_api = settings.get("main_api")
    active = None
    if main_api == "openai" and oai.get("chat_completion_source") == "custom":
        active = CUSTOM_SECRET
    elif main_api == "textgenerationwebui" and textgen.get("type") == "generic":
        active = GENERIC_SECRET
    return sorted((name for name, nano in points.items() if nano), key=lambda name: name != active)


@dataclass(frozen=True)
class KeyLookup:
    """One user's key and the file states it was read from (a lookup is redone only when they change)."""

    key: ResolvedKey
    secrets: Signature | None
    settings: Signature | None = None
    uses_settings: bool = False  # the key came (or could come) from a slot whose URL is in settings.json

    def still_valid(self, paths: UserPaths) -> bool:
        if _signature(paths.secrets) != self.secrets:
            return False
        return not self.uses_settings or _signature(paths.settings) == self.settings


def _signature(path: os.PathLike[str]) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def lookup_key(paths: UserPaths, previous: KeyLookup | None = None) -> KeyLookup:
    """The user's key from their ST files (blocking; run it in a thread). Never raises for bad files."""
    if previous is not None and previous.still_valid(paths):
        return previous
    secrets_sig = _signature(paths.secrets)
    if secrets_sig is None:
        return KeyLookup(ResolvedKey.none(), None)
    found = read_secrets(paths.secrets, (NANOGPT_SECRET, CUSTOM_SECRET, GENERIC_SECRET))
    if NANOGPT_SECRET in found:
        return KeyLookup(ResolvedKey(found[NANOGPT_SECRET].reveal(), "sillytavern"), secrets_sig)
    if not found:
        return KeyLookup(ResolvedKey.none(), secrets_sig)
    settings_sig = _signature(paths.settings)
    try:
        settings = read_document(paths.settings).data
    except STDataError:
        settings = None
    for slot in nanogpt_key_slots(settings):
        if slot in found:
            key = ResolvedKey(found[slot].reveal(), "sillytavern")
            return KeyLookup(key, secrets_sig, settings_sig, uses_settings=True)
    return KeyLookup(ResolvedKey.none(), secrets_sig, settings_sig, uses_settings=True)


class UserKeys:
    """Per-user key lookups: cached by file state, single-flight, in a worker thread, with a deadline.

    ``on_change`` is called (on the event loop) whenever a user's key appears, changes or disappears, so
    caches and pollers of keys nobody uses any more can be dropped.
    """

    def __init__(
        self,
        *,
        timeout: float = KEY_LOOKUP_TIMEOUT,
        fresh_for: float = KEY_FRESH_FOR,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._fresh_for = fresh_for
        self._clock = clock
        self.on_change = on_change
        self._known: dict[str, KeyLookup] = {}
        self._checked: dict[str, float] = {}  # when each user's lookup last finished
        self._inflight: dict[str, asyncio.Task[KeyLookup]] = {}
        self._slow: set[str] = set()  # users whose lookup missed the deadline (warned once)

    async def get(self, handle: str, paths: UserPaths, *, fresh: bool = False) -> ResolvedKey:
        """The user's key; ``fresh``: look at the files now (their change was just seen)."""
        known = self._known.get(handle)
        if (
            known is not None
            and not fresh
            and self._clock() - self._checked.get(handle, -1e9) < self._fresh_for
        ):
            return known.key
        task = self._inflight.get(handle)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(lookup_key, paths, self._known.get(handle)))
            self._inflight[handle] = task
            task.add_done_callback(functools.partial(self._finished, handle))
        try:
            return (await asyncio.wait_for(asyncio.shield(task), self._timeout)).key
        except TimeoutError:
            if handle not in self._slow:
                self._slow.add(handle)
                log.warning(
                    "reading %s's SillyTavern secrets takes longer than %.0f s; using the last key known",
                    handle,
                    self._timeout,
                )
            known = self._known.get(handle)
            return known.key if known is not None else ResolvedKey.none()
        except Exception:
            known = self._known.get(handle)  # logged by _finished
            return known.key if known is not None else ResolvedKey.none()

    def _finished(self, handle: str, task: asyncio.Task[KeyLookup]) -> None:
        if self._inflight.get(handle) is task:
            del self._inflight[handle]
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            log.error("looking up %s's NanoGPT key failed: %s", handle, type(exc).__name__)
            return
        self._slow.discard(handle)
        self._checked[handle] = self._clock()
        result = task.result()
        before = self._known.get(handle)
        self._known[handle] = result
        if before is None or before.key.fingerprint != result.key.fingerprint:
            if before is not None:
                log.info("%s's NanoGPT key changed (%s -> %s)", handle, before.key, result.key)
            if self.on_change is not None:
                self.on_change()

    def cached(self, handle: str) -> ResolvedKey | None:
        known = self._known.get(handle)
        return known.key if known is not None else None

    def forget(self, handle: str) -> None:
        """The user is gone: their key no longer counts as in use."""
        self._checked.pop(handle, None)
        if self._known.pop(handle, None) is not None and self.on_change is not None:
            self.on_change()

    def fingerprints(self) -> set[str]:
        """Fingerprints of every key currently known to be in use."""
        return {lookup.key.fingerprint for lookup in self._known.values() if lookup.key.present}
