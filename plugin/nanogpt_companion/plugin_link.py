"""The file that ties ST's server plugin to this service: ``<ST>/plugins/nanogpt-companion.service.json``.

Why it exists: the plugin forwards each ST user's bearer token to the service, so it must take the service's
address from a place no ST user can write (ST's files API lets every user upload into their own
``user/files/``, where the per-user token file lives) and it must know that the process answering there is
this service before it sends a token. ST's ``plugins/`` folder is outside the data root and no ST API writes
into it. The file holds:

* ``url``: where the service listens (loopback only);
* ``secret``: a random key the service proves it knows by answering ``HEAD /health`` carrying a challenge
  header with an HMAC of that challenge (a process that merely took the port cannot);
* ``autostart``: the command line and log file the plugin uses to start the service with SillyTavern.

``install-extension --server-plugin`` writes all of it; ``serve --sillytavern`` creates it when missing (a
plugin copied by hand) and keeps ``url`` current. It lies beside the plugin's folder, not inside it, so that
an update (which replaces the folder) or a ``--link`` install (a symlink into a checkout) never touches it.
ST's plugin loader skips it: only folders and ``.js``/``.cjs``/``.mjs`` files in ``plugins/`` are loaded
(``src/plugin-loader.js`` ``loadPlugins``, identical in ST 1.13.5 and 1.19.0).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nanogpt_companion.sillytavern.documents import write_new_file_atomic
from nanogpt_companion.sillytavern.tokenfile import match_owner

logger = logging.getLogger(__name__)

PLUGIN_FOLDER = "nanogpt-companion"
LINK_FILE_NAME = "nanogpt-companion.service.json"
CHALLENGE_HEADER = "X-NanoGPT-Companion-Challenge"
PROOF_HEADER = "X-NanoGPT-Companion-Proof"
# Domain separation: the secret signs nothing else, but a fixed prefix keeps this proof from ever being
# reusable as some other HMAC of the same key.
PROOF_CONTEXT = b"nanogpt-companion/plugin-proof/v1\n"
LINK_FILE_MODE = 0o600
_MAX_LINK_BYTES = 64 * 1024
_SECRET_PATTERN = r"[A-Za-z0-9_-]{43,128}"  # noqa: S105 (a pattern, not a secret)
_LOOPBACK_URL = r"http://(127\.0\.0\.1|\[::1\]|localhost):[0-9]{1,5}"
_CHALLENGE_RE = re.compile(r"[0-9a-f]{32,128}")
_LOOPBACK_URL_RE = re.compile(_LOOPBACK_URL)


class Autostart(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    command: list[str] = Field(min_length=1)
    log: str = Field(min_length=1)


class ServiceLink(BaseModel):
    """The file's content (``version`` 1). Unknown keys are kept out; the plugin reads the same names."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    version: int = 1
    url: str = Field(pattern=f"^{_LOOPBACK_URL}$")
    secret: str = Field(pattern=f"^{_SECRET_PATTERN}$")
    autostart: Autostart | None = None

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def link_path(st_dir: Path) -> Path:
    return st_dir / "plugins" / LINK_FILE_NAME


def plugin_dir(st_dir: Path) -> Path:
    return st_dir / "plugins" / PLUGIN_FOLDER


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def proof(secret: str, challenge: str) -> str:
    """What only a holder of ``secret`` can answer to ``challenge`` (lower-case hex HMAC-SHA256)."""
    return hmac.new(secret.encode(), PROOF_CONTEXT + challenge.encode(), hashlib.sha256).hexdigest()


def valid_challenge(challenge: str) -> bool:
    return _CHALLENGE_RE.fullmatch(challenge) is not None


def read_link(path: Path) -> ServiceLink | None:
    """The link file's content, or None when it is missing or not a well-formed link file.

    Opened without following a symlink and without blocking (a FIFO planted there must not hang the
    caller), and only read when it is a small regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_LINK_BYTES:
            logger.warning("%s is not a small regular file; ignoring it", path)
            return None
        raw = os.read(fd, _MAX_LINK_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return ServiceLink.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError):
        logger.warning("%s is not a valid link file; it will be rewritten", path)
        return None


def write_link(path: Path, link: ServiceLink) -> None:
    """Atomic, mode 0600 (the secret is in it); owned like the plugins folder when we run as root."""
    write_new_file_atomic(path, link.dumps(), mode=LINK_FILE_MODE)
    match_owner(path, path.parent)


class PluginLink:
    """The service's side: keeps the link file's ``url`` current and answers the plugin's challenges.

    Only ``serve`` creates one (read-only commands never write into ST's folders). ``sync`` does the file
    work and is meant to run off the event loop; ``proof_for`` only uses what ``sync`` cached.
    """

    def __init__(self, st_dir: Path | None, public_url: str) -> None:
        self._path = link_path(st_dir) if st_dir is not None else None
        self._plugin_dir = plugin_dir(st_dir) if st_dir is not None else None
        self._public_url = public_url
        self._secret: str | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    def sync(self) -> None:
        """Create the file when the plugin is installed without one; rewrite ``url`` when it moved."""
        if self._path is None or self._plugin_dir is None:
            return
        if not self._plugin_dir.is_dir():
            self._secret = None
            return
        current = read_link(self._path)
        if current is not None and current.url == self._public_url:
            self._secret = current.secret
            return
        if _LOOPBACK_URL_RE.fullmatch(self._public_url) is None:
            logger.warning(
                "the server plugin only talks to a loopback address; %s is not one, so the plugin "
                "will not reach this service",
                self._public_url,
            )
            self._secret = current.secret if current is not None else None
            return
        updated = (
            ServiceLink(url=self._public_url, secret=new_secret())
            if current is None
            else current.model_copy(update={"url": self._public_url})
        )
        try:
            write_link(self._path, updated)
        except OSError as exc:
            logger.warning("cannot write %s for the server plugin: %s", self._path, exc)
            self._secret = current.secret if current is not None else None
            return
        logger.info("told the server plugin where the service is (%s)", self._path)
        self._secret = updated.secret

    def proof_for(self, challenge: str) -> str | None:
        if self._secret is None or not valid_challenge(challenge):
            return None
        return proof(self._secret, challenge)
