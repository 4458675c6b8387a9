"""ST users known to the service, their bearer tokens, and which NanoGPT key each one uses.

A token is the capability to act as one ST user: it is written into that user's
``user/files/nanogpt-companion.json``, which ST serves only to that logged-in user, so the extension can
read it same-origin and nobody else can. Without an ST data root there is one local user whose token
file lives in the service's state dir.

Only the service writes token files. The one-shot commands (``doctor``, ``catalog``) build a read-only
registry: they read the tokens the service wrote and never touch ST's folders, so running one of them next
to a service on another port cannot point the extension at the wrong URL.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nanogpt_companion import API_VERSION, __version__
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.sillytavern.dataroot import UserPaths, UserProblem, scan_users
from nanogpt_companion.sillytavern.errors import STDataError
from nanogpt_companion.sillytavern.tokenfile import ensure_token_file, read_token
from nanogpt_companion.user_keys import KEY_LOOKUP_TIMEOUT, UserKeys

log = logging.getLogger(__name__)

LOCAL_USER = "_local"


@dataclass(frozen=True)
class User:
    handle: str
    paths: UserPaths | None  # None for the local user of a service without an ST data root
    token: str

    @property
    def has_st_files(self) -> bool:
        return self.paths is not None


@dataclass(frozen=True)
class _Scan:
    """What one look at the data root found (built in a worker thread, applied on the event loop)."""

    users: dict[str, User]
    problems: list[UserProblem]
    root_present: bool = True


class UserRegistry:
    def __init__(
        self,
        *,
        data_root: Path | None,
        state_dir: Path,
        public_url: str,
        config_key: str | None,
        st_dir: Path | None = None,
        on_change: Callable[[list[str], list[str]], None] | None = None,
        key_timeout: float = KEY_LOOKUP_TIMEOUT,
        write_token_files: bool = True,
    ) -> None:
        self._st_dir = st_dir
        self._write_token_files = write_token_files
        self._root_seen: bool | None = None  # data root present at the last scan (logged when it changes)
        self._data_root = data_root
        self._state_dir = state_dir
        self._public_url = public_url
        self._config_key = config_key
        self._on_change = on_change
        self._users: dict[str, User] = {}
        self._keys = UserKeys(timeout=key_timeout)
        self._reported: set[str] = set()  # causes of refused folders already logged (once per cause)

    @property
    def data_root(self) -> Path | None:
        return self._data_root

    def on_keys_change(self, callback: Callable[[set[str]], None]) -> None:
        """``callback(active)`` runs whenever some user's key appears, changes or disappears; ``active``
        is every key fingerprint still in use (see ``active_fingerprints``)."""
        self._keys.on_change = lambda: callback(self.known_fingerprints())

    def refresh(self) -> tuple[list[str], list[str]]:
        """Re-scan the data root; write token files for new users. Returns (added, removed) handles.

        Blocking (it reads and writes files): the service calls ``refresh_async``. A read-only registry
        reads each user's existing token instead (``""`` when there is none yet).
        """
        return self._apply(self._scan())

    async def refresh_async(self) -> tuple[list[str], list[str]]:
        """``refresh`` with the file work in a worker thread, so a slow or hostile data root (a FIFO for a
        token file, a hung mount) never stalls the event loop."""
        return self._apply(await asyncio.to_thread(self._scan))

    def _scan(self) -> _Scan:
        problems: list[UserProblem] = []
        root_present = True
        if self._data_root is None:
            found = [UserPaths(LOCAL_USER, self._state_dir / "local")]
        else:
            found, problems = scan_users(self._data_root)
            # Before ST's first start there is no data root: normal, said once by _note_data_root.
            root_present = self._data_root.is_dir()
            if not root_present:
                problems = [p for p in problems if not p.cause.startswith("missing:")]
        current: dict[str, User] = {}
        plugin = self._st_dir is not None and (self._st_dir / "plugins" / "nanogpt-companion").is_dir()
        for paths in found:
            existing = self._users.get(paths.handle)
            if not self._write_token_files:
                current[paths.handle] = User(paths.handle, paths, read_token(paths) or "")
                continue
            try:
                token = ensure_token_file(paths, self._public_url, __version__, API_VERSION, plugin=plugin)
            except (OSError, STDataError) as exc:
                reason = exc.reason if isinstance(exc, STDataError) else exc.strerror or str(exc)
                problems.append(
                    UserProblem(
                        f"token:{paths.handle}:{reason}",
                        f"cannot write the token file for user {paths.handle}: {reason}",
                    )
                )
                if existing is None:
                    continue
                token = existing.token
            is_local = self._data_root is None
            current[paths.handle] = User(paths.handle, None if is_local else paths, token)
        return _Scan(current, problems, root_present)

    def _note_data_root(self, present: bool) -> None:
        """Say once that ST has not created its data folder yet, and once when it appears (first start)."""
        if self._data_root is None or present == self._root_seen:
            return
        if not present:
            log.info(
                "SillyTavern's data folder %s does not exist yet (SillyTavern was never started?); "
                "users are picked up as SillyTavern creates them",
                self._data_root,
            )
        elif self._root_seen is False:
            log.info("SillyTavern created its data folder %s", self._data_root)
        self._root_seen = present

    def _apply(self, scan: _Scan) -> tuple[list[str], list[str]]:
        self._note_data_root(scan.root_present)
        causes = {problem.cause for problem in scan.problems}
        for problem in scan.problems:
            if problem.cause not in self._reported:
                log.warning("%s", problem.message)
        self._reported = causes  # a cause that went away is reported again if it comes back
        added = sorted(scan.users.keys() - self._users.keys())
        removed = sorted(self._users.keys() - scan.users.keys())
        self._users = scan.users
        for handle in added:
            log.info("serving SillyTavern user %s", handle)
        for handle in removed:
            self._keys.forget(handle)
        if (added or removed) and self._on_change is not None:
            self._on_change(added, removed)
        return added, removed

    def handles(self) -> list[str]:
        return sorted(self._users)

    def get(self, handle: str) -> User | None:
        return self._users.get(handle)

    def authenticate(self, token: str) -> User | None:
        """The user this token belongs to. Compares every token in constant time."""
        match: User | None = None
        for user in self._users.values():
            if user.token and hmac.compare_digest(user.token.encode(), token.encode()):
                match = user
        return match

    def token_file(self, handle: str) -> Path | None:
        if handle == LOCAL_USER and self._data_root is None:
            return UserPaths(LOCAL_USER, self._state_dir / "local").token_file
        user = self._users.get(handle)
        return user.paths.token_file if user and user.paths else None

    async def key_for(self, handle: str, *, fresh: bool = False) -> ResolvedKey:
        """Configured key first (single-user setups), then the user's ST files (``user_keys``); looked up
        again when those files change, so a key changed in ST takes effect without a restart. ``fresh``:
        the files were just seen changing, look now."""
        if self._config_key:
            return ResolvedKey(self._config_key, "config")
        user = self._users.get(handle)
        if user is None or user.paths is None:
            return ResolvedKey.none()
        return await self._keys.get(handle, user.paths, fresh=fresh)

    def cached_key(self, handle: str) -> ResolvedKey | None:
        """The key last looked up for this user, without touching any file (None: not looked up yet)."""
        if self._config_key:
            return ResolvedKey(self._config_key, "config")
        return self._keys.cached(handle)

    def known_fingerprints(self) -> set[str]:
        """Fingerprints of the keys in use as far as already known (no file is read)."""
        if self._config_key:
            return {ResolvedKey(self._config_key, "config").fingerprint}
        return self._keys.fingerprints()

    async def active_fingerprints(self) -> set[str]:
        """Every key currently in use by some user (or the configured key), each user's files checked."""
        if self._config_key:
            return self.known_fingerprints()
        keys = await asyncio.gather(*(self.key_for(handle) for handle in self.handles()))
        return {key.fingerprint for key in keys if key.present}
