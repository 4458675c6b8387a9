"""The per-user bootstrap file ``<user>/user/files/nanogpt-companion.json`` (docs/http-contract.md).

ST serves ``/user/files/*`` only to the logged-in user, so this file is how the extension learns the
service URL and the token that identifies its user. The token is kept across restarts (an open tab keeps
working when the service restarts), so an existing well-formed token is reused.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from typing import Any

from .confine import confined
from .dataroot import TOKEN_FILE_NAME, UserPaths
from .documents import write_new_file_atomic
from .stjson import dumps_st, loads_st

logger = logging.getLogger(__name__)

TOKEN_FILE_MODE = 0o600
_MAX_TOKEN_FILE_BYTES = 64 * 1024
# secrets.token_urlsafe(32) gives 43 characters; longer url-safe tokens (written by a later version)
# are kept too, shorter ones are replaced as too weak.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43,128}")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _read_existing(path: os.PathLike[str]) -> tuple[dict[str, Any] | None, int | None]:
    """The current content and permission bits, without following a symlink (a planted link is replaced).

    ``O_NONBLOCK``: a FIFO planted in its place must not hang the user scan (it is then replaced too).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_TOKEN_FILE_BYTES:
            return None, None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(_MAX_TOKEN_FILE_BYTES)
    finally:
        os.close(fd)
    try:
        data = loads_st(raw.decode("utf-8"))
    except ValueError:
        return None, stat.S_IMODE(st.st_mode)
    return (data if isinstance(data, dict) else None), stat.S_IMODE(st.st_mode)


def read_token(user: UserPaths) -> str | None:
    """The user's current token, if the file holds a well-formed one."""
    data, _ = _read_existing(user.token_file)
    token = data.get("token") if data else None
    return token if isinstance(token, str) and _TOKEN.fullmatch(token) else None


def read_service_url(user: UserPaths) -> str | None:
    """The service URL the running (or last) service wrote for this user."""
    data, _ = _read_existing(user.token_file)
    url = data.get("url") if data else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def match_owner(path: os.PathLike[str], like: os.PathLike[str]) -> None:
    """When running as root, give our file to the user who owns the ST data, or ST could not serve it."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(like)
        if owner.st_uid != 0:
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
    except OSError as exc:
        logger.warning("could not hand %s to the ST user: %s", path, exc.strerror)


def ensure_token_file(
    user: UserPaths, url: str, version: str, api_version: int, *, plugin: bool = False
) -> str:
    """Make sure the token file exists with this content; return the user's token.

    ``plugin`` tells the extension that ST's server plugin is installed, so it tries the same-origin
    plugin path first (the only path that works when ST is opened from another device).

    Rewritten (atomically, mode 0600) only when something differs, so an unchanged restart does not
    touch the file (and so does not wake watchers or ST's file cache).
    """
    path = user.token_file
    data, mode = _read_existing(path)
    token = data.get("token") if data else None
    if not (isinstance(token, str) and _TOKEN.fullmatch(token)):
        token = new_token()
    desired = {"url": url, "token": token, "version": version, "api_version": api_version, "plugin": plugin}
    if data == desired and mode == TOKEN_FILE_MODE:
        return token
    if data == desired and mode is not None:
        os.chmod(path, TOKEN_FILE_MODE)
        logger.info("tightened permissions of %s to 0600", path)
        return token
    # A `user` or `files` folder that is a link out of the user's folder is never followed to create
    # folders or the token file elsewhere (UnsafeLink, an OSError the registry reports).
    confined(user.files_dir / TOKEN_FILE_NAME, user.root, follow_final=False)
    created_dirs = not user.files_dir.is_dir()
    user.files_dir.mkdir(parents=True, exist_ok=True)
    if created_dirs:
        match_owner(user.files_dir.parent, user.root)
        match_owner(user.files_dir, user.root)
    write_new_file_atomic(path, dumps_st(desired).encode("utf-8"), mode=TOKEN_FILE_MODE, within=user.root)
    match_owner(path, user.root)
    logger.info("wrote token file for ST user %r", user.handle)
    return token
