"""The endpoint switch's server half: copy the user's NanoGPT key into the ST key slot a connection reads.

The extension switches ST's connection through ST's own controls; the key is the one part it must not
touch (a key never goes through the browser). This service copies it, on request, from where the service
already found it (the user's ST ``secrets.json``) into ``api_key_custom``, ``api_key_generic`` or
``api_key_nanogpt`` (``sillytavern/secrets_writer.py`` does the file work), records what it did so it can be
undone, and refuses plainly when it cannot: no key in ST, a key that only the service's configuration
holds (it is not ST's to copy), a flat-format slot holding another key, a file that keeps changing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from nanogpt_companion.doctor.rules.keys import needed_key_slots
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import ConcurrentModification, STDataError
from nanogpt_companion.sillytavern.secrets_writer import (
    COMPANION_LABEL,
    SLOT_SECRETS,
    SecretsLayout,
    SlotChange,
    SlotName,
    SlotTaken,
    install_key,
    slot_state,
    undo_install,
)
from nanogpt_companion.sillytavern.version import V_LIST_SECRETS, STVersion
from nanogpt_companion.store import Store
from nanogpt_companion.users import UserRegistry

log = logging.getLogger(__name__)

# ST saves secrets.json only when a key changes: three misses in a row means something keeps writing it.
CAS_ATTEMPTS = 3


class KeySlotError(Exception):
    """A refusal with an HTTP status, a contract error code and a sentence for the user."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InstallResult:
    status: Literal["written", "unchanged"]
    slot: SlotName
    secret: str
    write_id: int | None
    layout: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "slot": self.slot,
            "secret": self.secret,
            "write_id": self.write_id,
            "layout": self.layout,
            "label": COMPANION_LABEL,
            "message": self.message,
        }


_SLOT_NAMES: dict[SlotName, str] = {
    "nanogpt": "NanoGPT",
    "custom": "Custom (OpenAI-compatible)",
    "generic": "Generic (OpenAI-compatible)",
}


class KeySlotService:
    def __init__(
        self,
        *,
        users: UserRegistry,
        store: Store,
        key_for: Callable[[str], Awaitable[ResolvedKey]],
        version_for: Callable[[str], STVersion],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._users = users
        self._store = store
        self._key_for = key_for
        self._version_for = version_for
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, handle: str) -> asyncio.Lock:
        lock = self._locks.get(handle)
        if lock is None:
            lock = self._locks[handle] = asyncio.Lock()
        return lock

    def _paths(self, handle: str) -> UserPaths:
        user = self._users.get(handle)
        if user is None or user.paths is None:
            raise KeySlotError(
                409,
                "no_data_root",
                "The service was started without a SillyTavern directory, so it cannot set "
                "SillyTavern's keys.",
            )
        return user.paths

    async def _st_key(self, handle: str) -> str:
        key = await self._key_for(handle)
        value = key.reveal()
        if value is None:
            raise KeySlotError(
                409,
                "no_key",
                "No NanoGPT API key was found in SillyTavern. Add it under API Connections "
                "(Chat Completion → NanoGPT → API key), then try again.",
            )
        if key.source != "sillytavern":
            raise KeySlotError(
                409,
                "key_not_in_sillytavern",
                "The service uses the NanoGPT key from its own configuration (NANOGPT_API_KEY), and "
                "it copies only keys that are already in SillyTavern. Paste your key into "
                "SillyTavern's API Connections once, then try again.",
            )
        return value

    async def state(self, handle: str) -> dict[str, Any]:
        """Which slots hold the user's NanoGPT key ("ours"), another key, or none."""
        path = self._paths(handle).secrets
        key = await self._key_for(handle)
        value = key.reveal()
        slots: dict[str, str] = {}
        for slot in SLOT_SECRETS:
            slots[slot] = await asyncio.to_thread(slot_state, path, slot, value) if value else "unknown"
        needed = await self.needed(handle)
        return {
            "key": {"present": value is not None, "source": key.source},
            "slots": slots,
            "needed": {slot: uses for slot, uses in needed.items()},
        }

    async def install(self, handle: str, slot: SlotName) -> InstallResult:
        paths = self._paths(handle)
        key = await self._st_key(handle)
        layout: SecretsLayout = "flat" if self._version_for(handle).older_than(V_LIST_SECRETS) else "list"
        name = _SLOT_NAMES[slot]
        async with self._lock(handle):
            change = await self._install_retrying(paths, slot, key, layout)
        if not change.changed:
            return InstallResult(
                "unchanged",
                slot,
                change.secret,
                None,
                change.layout,
                f"SillyTavern's {name} key is already your NanoGPT key.",
            )
        write_id = await self._store.key_write_add(handle, slot, change.as_json(), self._clock())
        log.info("copied the NanoGPT key of %s into %s (write %d)", handle, change.secret, write_id)
        return InstallResult(
            "written",
            slot,
            change.secret,
            write_id,
            change.layout,
            f"Your NanoGPT key is now SillyTavern's active {name} key.",
        )

    async def _install_retrying(
        self, paths: UserPaths, slot: SlotName, key: str, layout: SecretsLayout
    ) -> SlotChange:
        for attempt in range(CAS_ATTEMPTS):
            try:
                return await asyncio.to_thread(
                    install_key, paths.secrets, slot, key, default_layout=layout, within=paths.root
                )
            except ConcurrentModification:
                if attempt == CAS_ATTEMPTS - 1:
                    raise KeySlotError(
                        409,
                        "conflict",
                        "secrets.json kept changing while the key was being set (SillyTavern was saving "
                        "keys); nothing was written. Try again.",
                    ) from None
                await asyncio.sleep(0.05 * (attempt + 1))
            except SlotTaken as exc:
                message = exc.reason + ". Clear that key in SillyTavern first."
                raise KeySlotError(409, "slot_taken", message) from None
            except STDataError as exc:
                raise KeySlotError(500, "write_failed", exc.reason) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def needed(self, handle: str) -> dict[SlotName, list[str]]:
        """The slots this user's NanoGPT set-up reads (doctor/rules/keys.py), from their settings.json."""
        paths = self._paths(handle)
        try:
            doc = await asyncio.to_thread(read_document, paths.settings)
        except STDataError:
            return {}
        return needed_key_slots(doc.data if isinstance(doc.data, dict) else {})

    async def install_everywhere(
        self, handle: str, slots: list[SlotName] | None = None
    ) -> list[dict[str, Any]]:
        """One action, every slot: the user's key into each slot their set-up reads (or ``slots``).

        Each slot is its own journalled write (undoable one by one); a refusal for one slot (a flat-format
        slot holding another key) stops nothing else and is reported as that slot's result.
        """
        wanted = slots if slots is not None else list(await self.needed(handle))
        if not wanted:
            raise KeySlotError(
                409,
                "nothing_to_do",
                "No part of your SillyTavern set-up points at NanoGPT, so no key slot needs your key.",
            )
        await self._st_key(handle)  # no key, or a key only the config holds: one refusal for all slots
        results: list[dict[str, Any]] = []
        for slot in dict.fromkeys(wanted):
            try:
                results.append((await self.install(handle, slot)).as_json())
            except KeySlotError as exc:
                results.append({"status": "refused", "slot": slot, "code": exc.code, "message": exc.message})
        return results

    async def undo(self, handle: str, write_id: int) -> dict[str, Any]:
        paths = self._paths(handle)
        record = await self._store.key_write_get(handle, write_id)
        if record is None:
            raise KeySlotError(404, "not_found", f"No key change {write_id} for this user.")
        if record.undone_at is not None:
            return {"status": "already_undone", "message": "That key change was already undone."}
        change = SlotChange.from_json(record.change)
        async with self._lock(handle):
            for attempt in range(CAS_ATTEMPTS):
                try:
                    outcome, message = await asyncio.to_thread(
                        undo_install, paths.secrets, change, within=paths.root
                    )
                    break
                except ConcurrentModification:
                    if attempt == CAS_ATTEMPTS - 1:
                        raise KeySlotError(
                            409, "conflict", "secrets.json kept changing; nothing was undone. Try again."
                        ) from None
                    await asyncio.sleep(0.05 * (attempt + 1))
                except STDataError as exc:
                    raise KeySlotError(500, "write_failed", exc.reason) from None
        await self._store.key_write_mark_undone(write_id, self._clock())
        log.info("undid key write %d of %s: %s", write_id, handle, outcome)
        return {"status": outcome, "message": message}
