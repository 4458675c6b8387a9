"""Watch each ST user's settings and presets; hand changes to the doctor.

Why directories, non-recursively: ST replaces ``settings.json`` by writing a temp file and renaming it
over the old one, so a watch on the file itself dies after one save; a recursive watch on the user dir
would wake for every chat message and thumbnail. Each user dir and its ``OpenAI Settings/`` are watched
without recursion, and only the names that matter pass the filter.

Why a short debounce: watchfiles' default 1.6 s exists to batch editor saves; ST's write is one atomic
rename, and the user is waiting to see the fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from watchfiles import Change, awatch

from nanogpt_companion.doctor_service import DoctorService
from nanogpt_companion.sillytavern.documents import is_companion_temp
from nanogpt_companion.users import UserRegistry

log = logging.getLogger(__name__)

PRESETS_DIR = "OpenAI Settings"
RESTART_CHECK = 2.0  # how often the watch set is compared with the known users


class SettingsWatcher:
    def __init__(self, users: UserRegistry, doctor: DoctorService, *, debounce_ms: int = 50) -> None:
        self._users = users
        self._doctor = doctor
        self._debounce_ms = debounce_ms

    def _watch_set(self) -> dict[Path, str]:
        """Directory -> user handle, for every directory that currently exists."""
        result: dict[Path, str] = {}
        for handle in self._users.handles():
            user = self._users.get(handle)
            if user is None or user.paths is None:
                continue
            for directory in (user.paths.root, user.paths.presets_dir):
                if directory.is_dir():
                    result[directory.resolve()] = handle
        return result

    @staticmethod
    def _relevant(path: Path) -> bool:
        name = path.name
        if is_companion_temp(name):
            return False  # our own temp file; the rename that follows is what matters
        if path.parent.name == PRESETS_DIR:
            return name.endswith(".json")
        return name == "settings.json"

    def handles_for(self, changes: Iterable[tuple[Change, str]], watched: dict[Path, str]) -> set[str]:
        handles: set[str] = set()
        for _, raw in changes:
            path = Path(raw)
            if not self._relevant(path):
                continue
            handle = watched.get(path.parent.resolve()) if path.parent.exists() else None
            if handle is None:
                handle = watched.get(path.parent)
            if handle is not None:
                handles.add(handle)
        return handles

    async def run(self) -> None:
        """Watch until cancelled; re-arm when users or their preset folders appear or vanish."""
        while True:
            watched = self._watch_set()
            if not watched:
                await asyncio.sleep(RESTART_CHECK)
                continue
            stop = asyncio.Event()
            monitor = asyncio.create_task(self._stop_when_set_changes(watched, stop))
            try:
                async for changes in awatch(
                    *watched,
                    recursive=False,
                    debounce=self._debounce_ms,
                    step=10,
                    stop_event=stop,
                    ignore_permission_denied=True,
                ):
                    for handle in sorted(self.handles_for(changes, watched)):
                        await self._doctor.check_user(handle)
            except FileNotFoundError:
                log.info("a watched folder vanished; re-arming the watcher")
            except Exception:
                log.exception("settings watcher failed; restarting it")
                await asyncio.sleep(1.0)
            finally:
                monitor.cancel()

    async def _stop_when_set_changes(self, watched: dict[Path, str], stop: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(RESTART_CHECK)
            if self._watch_set() != watched:
                stop.set()
                return
