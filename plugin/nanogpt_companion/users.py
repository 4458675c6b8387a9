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

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nanogpt_companion import API_VERSION, __version__
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.sillytavern.dataroot import UserPaths, discover_users
from nanogpt_companion.sillytavern.secrets import read_nanogpt_key
from nanogpt_companion.sillytavern.tokenfile import ensure_token_file, read_token

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
        # handle -> (secrets.json stat signature, key): every API request needs the caller's key, and
        # re-reading secrets.json each time would dominate a cached catalogue request.
        self._keys: dict[str, tuple[tuple[int, int, int], ResolvedKey]] = {}

    @property
    def data_root(self) -> Path | None:
        return self._data_root

    def refresh(self) -> tuple[list[str], list[str]]:
        """Re-scan the data root; write token files for new users. Returns (added, removed) handles.

        A read-only registry reads each user's existing token instead (``""`` when there is none yet).
        """
        if self._data_root is None:
            found = [UserPaths(LOCAL_USER, self._state_dir / "local")]
        else:
            self._note_data_root()
            found = discover_users(self._data_root)
        current: dict[str, User] = {}
        plugin = self._st_dir is not None and (self._st_dir / "plugins" / "nanogpt-companion").is_dir()
        for paths in found:
            existing = self._users.get(paths.handle)
            if not self._write_token_files:
                token = read_token(paths) or ""
            else:
                try:
                    token = ensure_token_file(
                        paths, self._public_url, __version__, API_VERSION, plugin=plugin
                    )
                except OSError as exc:
                    log.warning(
                        "cannot write the token file for user %s: %s", paths.handle, exc.strerror or exc
                    )
                    if existing is None:
                        continue
                    token = existing.token
            is_local = self._data_root is None
            current[paths.handle] = User(paths.handle, None if is_local else paths, token)
        added = sorted(current.keys() - self._users.keys())
        removed = sorted(self._users.keys() - current.keys())
        self._users = current
        for handle in added:
            log.info("serving SillyTavern user %s", handle)
        if (added or removed) and self._on_change is not None:
            self._on_change(added, removed)
        return added, removed

    def _note_data_root(self) -> None:
        """Say once that ST has not created its data folder yet, and once when it appears (first start)."""
        assert self._data_root is not None
        present = self._data_root.is_dir()
        if present == self._root_seen:
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

    def key_for(self, handle: str) -> ResolvedKey:
        """Configured key first (single-user setups), then the user's ST secrets.json; read each time
        so a key changed in ST takes effect without a restart."""
        if self._config_key:
            return ResolvedKey(self._config_key, "config")
        user = self._users.get(handle)
        if user is None or user.paths is None:
            return ResolvedKey.none()
        try:
            st = user.paths.secrets.stat()
        except OSError:
            self._keys.pop(handle, None)
            return ResolvedKey.none()
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._keys.get(handle)
        if cached is not None and cached[0] == signature:
            return cached[1]
        key = read_nanogpt_key(user.paths)
        resolved = ResolvedKey.none() if key is None else ResolvedKey(key.reveal(), "sillytavern")
        self._keys[handle] = (signature, resolved)
        return resolved
