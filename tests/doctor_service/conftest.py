"""Shared helpers for the end-to-end doctor tests: real ST installs, the real app, real files.

The in-process app comes from tests/web/conftest.py (re-exported here so these tests get the same
``start_companion`` fixture); the subprocess service comes from tests/fakes/service_fixtures.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanogpt_companion.sillytavern.stjson import dumps_st
from nanogpt_companion.store import JournalEntry
from nanogpt_companion.web import keys
from tests.fakes.st_fixtures import DEFAULT_SETTINGS, FIXTURES, MakeSTInstall, STInstall, UserSpec
from tests.web.conftest import Companion, StartCompanion, start_companion

__all__ = ["Companion", "StartCompanion", "start_companion"]

PPP = ("oai_settings", "custom_prompt_post_processing")
_BASE = json.loads((FIXTURES / DEFAULT_SETTINGS).read_text(encoding="utf-8"))


def nanogpt_settings(ppp: str = "", **oai: Any) -> dict[str, Any]:
    """ST 1.18.0's settings.json with the NanoGPT source selected and PPP set to ``ppp``."""
    data: dict[str, Any] = copy.deepcopy(_BASE)
    data["oai_settings"]["custom_prompt_post_processing"] = ppp
    data["oai_settings"].update(oai)
    return data


def st_bytes(data: dict[str, Any]) -> bytes:
    return dumps_st(data).encode("utf-8")


def st_save(path: Path, data: dict[str, Any] | bytes) -> None:
    """Save like ST's write-file-atomic: a temp file in the same folder, then rename over the target."""
    raw = data if isinstance(data, bytes) else st_bytes(data)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def ppp_of(path: Path) -> Any:
    data = json.loads(path.read_bytes())
    return data["oai_settings"].get("custom_prompt_post_processing")


async def wait_until(predicate: Callable[[], Any], within: float = 10.0, step: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; fail the test with a clear message if it never is."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within} s")
        await asyncio.sleep(step)


async def settle(seconds: float = 0.6) -> None:
    """Give the watcher time to (not) react; used only before asserting that nothing happened."""
    await asyncio.sleep(seconds)


class SSEReader:
    """Reads an aiohttp SSE response incrementally; events accumulate in ``events`` in arrival order."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.events: list[tuple[str, Any]] = []
        self._name: str | None = None
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        while True:
            line = await self.resp.content.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                self._name = text[7:]
            elif text.startswith("data: ") and self._name:
                self.events.append((self._name, json.loads(text[6:])))

    def named(self, name: str) -> list[Any]:
        return [data for n, data in self.events if n == name]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.resp.close()


async def open_tab(companion: Companion, handle: str = "default-user") -> SSEReader:
    """An open ST tab, as the service sees it: an SSE stream with ``client=extension``."""
    resp = await companion.client.get("/api/events?client=extension", headers=companion.auth(handle))
    assert resp.status == 200
    reader = SSEReader(resp)
    await wait_until(lambda: reader.named("hello"), 5)
    return reader


def one_user(make_st_install: MakeSTInstall, settings: dict[str, Any] | None = None) -> STInstall:
    return make_st_install(users={"default-user": UserSpec(settings=settings or nanogpt_settings(""))})


async def journal(companion: Companion, handle: str = "default-user") -> list[JournalEntry]:
    entries: list[JournalEntry] = await companion.client.app[keys.STORE].journal_list(handle)
    return entries


async def journalled(companion: Companion, count: int, handle: str = "default-user") -> list[JournalEntry]:
    """The journal once it holds ``count`` rows: a file fix's row is written right after the file, so a
    test that saw the fixed file waits for the row rather than racing it."""
    deadline = time.monotonic() + 10
    while True:
        entries = await journal(companion, handle)
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        await asyncio.sleep(0.02)


async def findings(companion: Companion, handle: str = "default-user") -> list[dict[str, Any]]:
    resp = await companion.get("/api/doctor", handle)
    assert resp.status == 200
    return list((await resp.json())["findings"])


async def started(companion: Companion, handle: str = "default-user") -> None:
    """Wait for the start-up scan, so later events are the watcher's doing."""
    doctor = companion.client.app[keys.DOCTOR]
    assert doctor is not None
    await wait_until(lambda: doctor._user_state(handle).checked_at)


async def watch_healthy_user(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> tuple[Companion, Path]:
    """One NanoGPT user whose settings are fine at start, the service watching, its start-up scan done.

    Returns the companion and the user's settings.json, which tests then save into as ST would."""
    st = one_user(make_st_install, nanogpt_settings("merge"))
    companion = await start_companion(st, watch=True)
    await started(companion)
    return companion, st.user().settings
