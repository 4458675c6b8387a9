"""Read-only access to a user's ST ``secrets.json``.

The key leaves this module only wrapped in ``NanoKey``, whose ``repr``/``str`` never show it. Problems are
logged at debug level with the reason only: the file holds every API key the user has.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

from .dataroot import UserPaths
from .documents import read_document
from .errors import STDataError

logger = logging.getLogger(__name__)

NANOGPT_SECRET = "api_key_nanogpt"  # noqa: S105 (the name of ST's secret, not a secret)
# Where NanoGPT's guide puts the key for its Custom (OpenAI-compatible) and Text Completion methods. Same
# names in ST 1.13.5 (src/endpoints/secrets.js lines 32, 52), 1.18.0 and 1.19.0 (lines 32, 54).
CUSTOM_SECRET = "api_key_custom"  # noqa: S105
GENERIC_SECRET = "api_key_generic"  # noqa: S105
SecretsFormat = Literal["list", "flat"]

# secrets.json is tiny; a couple of quick retries cover a non-atomic writer without delaying requests.
_ATTEMPTS = 3
_BACKOFF = 0.02
_MAX_BYTES = 4 * 1024 * 1024


class NanoKey:
    """A NanoGPT API key that cannot end up in a log, a traceback or a response by accident."""

    __slots__ = ("_value", "label", "secret_id")

    def __init__(self, value: str, *, label: str | None = None, secret_id: str | None = None) -> None:
        self._value = value
        self.label = label  # ST's user-visible label of the entry, e.g. "test key 2"
        self.secret_id = secret_id  # ST's entry id (a UUID, not secret), None for the flat format

    def reveal(self) -> str:
        """The key itself; call only where the upstream request's header is built."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """Stable and non-reversible; the same formula as ``keys.ResolvedKey`` so caches agree."""
        return "k" + hashlib.sha256(self._value.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"NanoKey(fingerprint={self.fingerprint!r}, label={self.label!r})"

    def __str__(self) -> str:
        return f"<NanoGPT key {self.fingerprint}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NanoKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("NanoKey is not picklable")  # pickles end up in caches and files


def _load(path: Path) -> dict[str, Any] | None:
    try:
        doc = read_document(path, attempts=_ATTEMPTS, backoff=_BACKOFF, max_bytes=_MAX_BYTES)
    except STDataError as exc:
        logger.debug("no usable secrets in %s: %s", path, type(exc).__name__)
        return None
    if not isinstance(doc.data, dict):
        logger.debug("no usable secrets in %s: not a JSON object", path)
        return None
    return doc.data


def _pick(value: Any) -> tuple[str, str | None, str | None] | None:
    """ST's ``readSecret`` without an id: the flat string, or the list entry marked active."""
    if isinstance(value, str):
        return (value, None, None) if value.strip() else None
    if isinstance(value, list):
        for entry in value:
            if isinstance(entry, dict) and entry.get("active") is True:
                secret = entry.get("value")
                if isinstance(secret, str) and secret.strip():
                    label, sid = entry.get("label"), entry.get("id")
                    return (
                        secret,
                        label if isinstance(label, str) else None,
                        sid if isinstance(sid, str) else None,
                    )
                return None
    return None


def read_secret(path: Path, name: str) -> NanoKey | None:
    """The active value of secret ``name`` in the secrets file at ``path``, or None."""
    data = _load(path)
    if data is None:
        return None
    picked = _pick(data.get(name))
    if picked is None:
        return None
    value, label, sid = picked
    return NanoKey(value.strip(), label=label, secret_id=sid)


def read_secrets(path: Path, names: tuple[str, ...]) -> dict[str, NanoKey]:
    """The active value of each secret in ``names`` that has one, from one read of the file."""
    data = _load(path)
    found: dict[str, NanoKey] = {}
    for name in names:
        picked = _pick(data.get(name)) if data is not None else None
        if picked is not None:
            value, label, sid = picked
            found[name] = NanoKey(value.strip(), label=label, secret_id=sid)
    return found


def read_nanogpt_key(user: UserPaths) -> NanoKey | None:
    return read_secret(user.secrets, NANOGPT_SECRET)


def secrets_format(path: Path) -> SecretsFormat | None:
    """``"list"`` (ST >= 1.13.1), ``"flat"`` (older), or None when unknown (missing, empty, unreadable).

    ST treats a file as migrated when any value is an array (its ``_migrated`` marker is one too).
    """
    data = _load(path)
    if not data:
        return None
    if any(isinstance(v, list) for v in data.values()):
        return "list"
    if any(isinstance(v, str) for v in data.values()):
        return "flat"
    return None
