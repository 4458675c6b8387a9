"""Watch each ST user's settings and presets; hand changes to the doctor.

Why directories, non-recursively: ST replaces ``settings.json`` by writing a temp file and renaming it
over the old one, so a watch on the file itself dies after one save; a recursive watch on the user dir
would wake for every chat message and thumbnail. Each user dir and its ``OpenAI Settings/`` are watched
without recursion, and only the names that matter pass the filter.

Why a short debounce: watchfiles' default 1.6 s exists to batch editor saves; ST's write is one atomic
rename, and the user is waiting to see the fix.

Why one task per user: a user's check reads their files, and a slow disk or a hostile file must not hold
up anyone else's (a FIFO planted as one user's ``settings.json`` once stopped the watcher for all). A
change arriving while that user's check runs is not lost: the check runs once more when it ends.

``secrets.json`` is watched too: a key rotated or removed in ST is noticed at once, so caches and
pollers of the old key stop (``UserRegistry.on_keys_change``).

Why watchfiles' blocking ``watch`` in a thread of our own rather than ``awatch``: ``awatch`` runs the
same Rust watcher in a worker thread too, but through anyio, whose asyncio backend stays resident for
the service's lifetime (~1.3 MB measured) for what a thread and ``call_soon_threadsafe`` do here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterable
from pathlib import Path
from typing import Any

from watchfiles import Change, watch

from nanogpt_companion.doctor_service import DoctorService
from nanogpt_companion.sillytavern.dataroot import is_safe_handle
from nanogpt_companion.sillytavern.documents import is_companion_temp
from nanogpt_companion.users import UserRegistry

log = logging.getLogger(__name__)

PRESETS_DIR = "OpenAI Settings"
RESTART_CHECK = 2.0  # how often the watch set is compared with the known users
# Before ST's first start there is no data root to watch: look for it often (a stat), because ST creates it
# and the first user's folder moments before it opens the browser, and the extension needs the token file.
ROOT_POLL = 0.5
# A new user folder appears before ST copies settings.json into it: look again for a few seconds.
NEW_USER_RETRIES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
DATA_ROOT = ""  # the handle slot for the data root itself in the watch set
STEP_MS = 10  # how often the watcher thread looks at its stop flag (and batches within the debounce)

FileChanges = set[tuple[Change, str]]


async def watch_folders(
    paths: Iterable[Path], *, debounce_ms: int, stop: asyncio.Event
) -> AsyncGenerator[FileChanges, None]:
    """Batches of changes in ``paths`` (not recursive) until ``stop`` is set, as ``awatch`` gives them.

    The Rust watcher blocks, so it runs in a thread of its own that hands each batch to the event loop;
    an error in it (a folder that vanished) is raised here. The thread looks at its stop flag every
    ``STEP_MS``, so it ends moments after ``stop`` is set or this generator is closed.
    """
    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[FileChanges | BaseException | None] = asyncio.Queue()
    halt = threading.Event()
    folders = list(paths)

    def pump() -> None:
        outcome: BaseException | None = None
        try:
            for changes in watch(
                *folders,
                recursive=False,
                debounce=debounce_ms,
                step=STEP_MS,
                stop_event=halt,
                ignore_permission_denied=True,
                raise_interrupt=False,
            ):
                loop.call_soon_threadsafe(batches.put_nowait, changes)
        except Exception as exc:  # handed to the loop, which decides (re-arm or log)
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop closed first (shutdown): nobody is waiting
            loop.call_soon_threadsafe(batches.put_nowait, outcome)

    thread = threading.Thread(target=pump, name="nanogpt-watch", daemon=True)
    thread.start()
    relay = asyncio.create_task(stop.wait())
    relay.add_done_callback(lambda _: halt.set())
    try:
        while (item := await batches.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        relay.cancel()
        halt.set()
        await asyncio.to_thread(thread.join)


class SettingsWatcher:
    def __init__(self, users: UserRegistry, doctor: DoctorService, *, debounce_ms: int = 50) -> None:
        self._users = users
        self._doctor = doctor
        self._debounce_ms = debounce_ms
        self._tasks: set[asyncio.Task[None]] = set()
        self._checking: set[str] = set()  # users whose check task is running
        self._again: set[str] = set()  # ... and who changed again meanwhile

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch_set(self) -> dict[Path, str]:
        """Directory -> user handle, for every directory that currently exists."""
        result: dict[Path, str] = {}
        root = self._users.data_root
        if root is not None and root.is_dir():
            # Non-recursive, so only folders and files directly in the data root wake us: a new user.
            result[root.resolve()] = DATA_ROOT
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
        return name in ("settings.json", "secrets.json")

    def check_soon(self, handle: str) -> None:
        """Check this user in their own task; a user already being checked is checked again after."""
        if handle in self._checking:
            self._again.add(handle)
            return
        self._checking.add(handle)
        self._spawn(self._check(handle))

    async def _check(self, handle: str) -> None:
        try:
            while True:
                self._again.discard(handle)
                try:
                    # The key may live in secrets.json or depend on settings.json: look again now.
                    await self._users.key_for(handle, fresh=True)
                    await self._doctor.check_user(handle)
                except Exception:
                    log.exception("checking %s after a change failed", handle)
                if handle not in self._again:
                    return
        finally:
            self._checking.discard(handle)

    def handles_for(self, changes: Iterable[tuple[Change, str]], watched: dict[Path, str]) -> set[str]:
        handles: set[str] = set()
        for _, raw in changes:
            path = Path(raw)
            if not self._relevant(path):
                continue
            handle = watched.get(path.parent.resolve()) if path.parent.exists() else None
            if handle is None:
                handle = watched.get(path.parent)
            if handle:
                handles.add(handle)
        return handles

    @staticmethod
    def root_changed(changes: Iterable[tuple[Change, str]], watched: dict[Path, str]) -> bool:
        """Did something appear directly in the data root (a possible new user folder)?"""
        roots = {path for path, handle in watched.items() if handle == DATA_ROOT}
        return any(
            change == Change.added and Path(raw).parent in roots and not is_companion_temp(Path(raw).name)
            for change, raw in changes
        )

    def _unregistered_folders(self) -> bool:
        """Does the data root hold a folder that is not a known user (yet)?"""
        root = self._users.data_root
        if root is None:
            return False
        known = set(self._users.handles())
        try:
            with os.scandir(root) as entries:
                return any(
                    e.name not in known and is_safe_handle(e.name) and e.is_dir(follow_symlinks=True)
                    for e in entries
                )
        except OSError:
            return False

    async def _pick_up_new_users(self, stop: asyncio.Event) -> None:
        """Register users whose folder just appeared, then re-arm the watch to include them."""
        for delay in NEW_USER_RETRIES:
            await asyncio.sleep(delay)
            try:
                added, _ = await self._users.refresh_async()
            except OSError as exc:
                log.info("could not rescan the SillyTavern data root: %s", exc.strerror or exc)
                continue
            if added:
                stop.set()
                for handle in added:
                    await self._doctor.check_user(handle)
                return

    async def run(self) -> None:
        """Watch until cancelled; re-arm when users or their preset folders appear or vanish."""
        try:
            await self._watch_forever()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch_forever(self) -> None:
        while True:
            watched = self._watch_set()
            if not watched:
                await asyncio.sleep(ROOT_POLL)
                continue
            stop = asyncio.Event()
            if DATA_ROOT in watched.values() and await asyncio.to_thread(self._unregistered_folders):
                # A user folder that appeared before this watch was armed (on ST's first start the data root
                # and default-user appear within moments) raised no event: look for its settings.json now.
                self._spawn(self._pick_up_new_users(stop))
            monitor = asyncio.create_task(self._stop_when_set_changes(watched, stop))
            try:
                batches = watch_folders(watched, debounce_ms=self._debounce_ms, stop=stop)
                async with contextlib.aclosing(batches):  # the watcher thread ends with this block
                    async for changes in batches:
                        if self.root_changed(changes, watched):
                            self._spawn(self._pick_up_new_users(stop))
                        for handle in sorted(self.handles_for(changes, watched)):
                            self.check_soon(handle)
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
