"""Putting the user's NanoGPT key into the ST key slot a connection reads, and taking it back out.

Why the service writes ``secrets.json`` at all: one click on an endpoint switches ST to its Custom source
(or Text Completion's Generic type), which reads ``api_key_custom`` (``api_key_generic``), not
``api_key_nanogpt``.
Without the key there ST shows "Missing key" and cannot list models or chat. The key must never travel
through the browser, so the service copies it from the slot it already reads into the slot the connection
needs, on the user's own machine.

How, so nothing of the user's is lost:
- In ST's multi-key format (1.13.1+; ``src/endpoints/secrets.js`` ``writeSecret`` in 1.13.5, 1.18.0 and
  1.19.0) a slot holds a list of ``{id, value, label, active}``. The key is added as a new entry (or an entry
  that already holds it is made active), exactly as ST's own ``writeSecret`` does; the entries already there
  stay. Undo removes the entry we added and re-activates the one that was active before.
- In the flat format (before 1.13.1) a slot holds one string. An empty slot is filled; a slot holding some
  other key is never overwritten (``SlotTaken``): that key would be gone for good.
- Compare-and-swap on the bytes read, atomic replace, and only the one slot's value changes in the file
  (``write_patched``); a file that appears meanwhile is never clobbered.

What is remembered for undo (``SlotChange``) holds ids and a non-reversible fingerprint, never a key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .documents import Document, read_document, replace_file_atomic, sha256_hex
from .errors import ConcurrentModification, DocumentMissing, STDataError
from .patching import PatchEdit, write_patched
from .stjson import dumps_st

logger = logging.getLogger(__name__)

SlotName = Literal["nanogpt", "custom", "generic"]
# The secret each connection reads: ST 1.13.5 src/endpoints/secrets.js L32 (custom), L50 (nanogpt), L52
# (generic); the same names in 1.18.0 and 1.19.0.
SLOT_SECRETS: dict[SlotName, str] = {
    "nanogpt": "api_key_nanogpt",
    "custom": "api_key_custom",
    "generic": "api_key_generic",
}
# What ST's key manager shows for the entry we add (API Connections -> the key icon).
COMPANION_LABEL = "NanoGPT (added by NanoGPT Companion)"
SecretsLayout = Literal["list", "flat"]
SlotState = Literal["ours", "other", "empty"]


class SlotTaken(STDataError):
    """Flat format: the slot holds another key, and one slot holds only one key."""


@dataclass(frozen=True)
class SlotChange:
    """What ``install_key`` did, with exactly what ``undo_install`` needs; no key value in it."""

    secret: str  # e.g. "api_key_custom"
    layout: SecretsLayout
    changed: bool
    fingerprint: str  # of the value now active in the slot
    added_id: str | None = None  # list: the entry we appended
    activated_id: str | None = None  # list: the entry now active (added, or existing with the same key)
    previous_active: str | None = None  # list: the entry active before (None: none was)
    created_slot: bool = False  # flat: the slot was empty or absent before
    created_file: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlotChange:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def fingerprint(value: str) -> str:
    """Same formula as ``keys.ResolvedKey.fingerprint``: stable, not reversible."""
    return "k" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _read(path: Path) -> Document | None:
    try:
        doc = read_document(path, attempts=3, backoff=0.02, max_bytes=4 * 1024 * 1024)
    except DocumentMissing:
        return None
    if not isinstance(doc.data, dict):
        raise STDataError(path, f"{path.name} is not a JSON object; it was left unchanged")
    return doc


def _layout(data: dict[str, Any], default: SecretsLayout) -> SecretsLayout:
    """ST treats a file as migrated when any value is an array (its ``_migrated`` marker is one too)."""
    if any(isinstance(v, list) for v in data.values()):
        return "list"
    if any(isinstance(v, str) for v in data.values()):
        return "flat"
    return default


def _entries(value: Any) -> list[dict[str, Any]]:
    return [dict(e) for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _active(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in entries if e.get("active") is True), None)


def slot_state(path: Path, slot: SlotName, key: str) -> SlotState:
    """Whether the slot's active value is ``key`` ("ours"), another key, or nothing."""
    try:
        doc = _read(path)
    except STDataError:
        return "empty"
    value = doc.data.get(SLOT_SECRETS[slot]) if doc is not None else None
    if isinstance(value, str):
        current: str | None = value.strip() or None
    else:
        active = _active(_entries(value))
        current = active.get("value") if active and isinstance(active.get("value"), str) else None
    if not current:
        return "empty"
    return "ours" if current.strip() == key else "other"


def install_key(
    path: Path,
    slot: SlotName,
    key: str,
    *,
    default_layout: SecretsLayout = "list",
    within: Path | None = None,
) -> SlotChange:
    """Make ``key`` the active value of ``slot`` in the secrets file at ``path``.

    ``default_layout``: the format to use when the file does not show one yet (missing or empty), i.e. the
    format the user's ST version writes. ``within``: the user's folder; nothing outside it is written (a
    link planted in place of the file is refused). Raises ``SlotTaken`` (flat slot holding another key),
    ``ConcurrentModification`` (the file changed while we worked: nothing written) or another
    ``STDataError`` (unreadable, read-only, disk full: nothing written).
    """
    secret = SLOT_SECRETS[slot]
    fp = fingerprint(key)
    doc = _read(path)
    data: dict[str, Any] = doc.data if doc is not None else {}
    layout = _layout(data, default_layout)
    if layout == "flat":
        current = data.get(secret)
        if isinstance(current, str) and current.strip() == key:
            return SlotChange(secret, layout, changed=False, fingerprint=fp)
        if isinstance(current, str) and current.strip():
            raise SlotTaken(
                path,
                f"SillyTavern's {secret} slot already holds another key, and this SillyTavern version "
                "keeps one key per slot; it was left unchanged",
            )
        change = SlotChange(secret, layout, changed=True, fingerprint=fp, created_slot=True)
        _write(path, doc, secret, key, created=doc is None, within=within)
        return change if doc is not None else SlotChange(**{**asdict(change), "created_file": True})

    entries = _entries(data.get(secret))
    before = _active(entries)
    same = next((e for e in entries if isinstance(e.get("value"), str) and e["value"].strip() == key), None)
    if same is not None and before is same and sum(1 for e in entries if e.get("active") is True) == 1:
        return SlotChange(secret, layout, changed=False, fingerprint=fp, activated_id=_id(same))
    for entry in entries:
        entry["active"] = False
    added_id: str | None = None
    if same is None:
        added_id = str(uuid.uuid4())
        same = {"id": added_id, "value": key, "label": COMPANION_LABEL, "active": True}
        entries.append(same)
    same["active"] = True
    change = SlotChange(
        secret,
        layout,
        changed=True,
        fingerprint=fp,
        added_id=added_id,
        activated_id=_id(same),
        previous_active=_id(before) if before is not None else None,
        created_file=doc is None,
    )
    _write(path, doc, secret, entries, created=doc is None, within=within)
    return change


UndoOutcome = Literal["reverted", "nothing_to_undo", "changed_since"]


def undo_install(path: Path, change: SlotChange, *, within: Path | None = None) -> tuple[UndoOutcome, str]:
    """Put the slot back as it was before ``change``, as far as that is still ours to decide.

    Only what we did is taken back: an entry we added is removed (unless the user already did), and the
    entry that was active before is active again unless the user picked yet another one meanwhile. Returns
    the outcome and a sentence for the user; raises like ``install_key`` when the file cannot be written.
    """
    if not change.changed:
        return "nothing_to_undo", "The key slot was already set; there was nothing to undo."
    doc = _read(path)
    if doc is None:
        return "nothing_to_undo", f"{path.name} no longer exists; there is nothing to undo."
    secret = change.secret
    value = doc.data.get(secret)
    if change.layout == "flat" or isinstance(value, str):
        if isinstance(value, str) and value.strip() and fingerprint(value.strip()) == change.fingerprint:
            write_patched(doc, [PatchEdit((secret,), delete=True)], within=within)
            return "reverted", f"Removed the NanoGPT key from {secret}."
        return "changed_since", f"{secret} was changed since; it was left as it is."
    entries = _entries(value)
    active = _active(entries)
    ours_active = active is not None and _id(active) == change.activated_id
    if change.added_id is not None:
        entries = [e for e in entries if _id(e) != change.added_id]
    if ours_active or active is None or (change.added_id is not None and _id(active) == change.added_id):
        for entry in entries:
            entry["active"] = change.previous_active is not None and _id(entry) == change.previous_active
        if entries and not any(e.get("active") is True for e in entries):
            entries[0]["active"] = True  # what ST's own deleteSecret does when none is left active
    elif change.added_id is None:
        return "changed_since", f"Another key was made active in {secret} since; it was left as it is."
    edit = PatchEdit((secret,), entries) if entries else PatchEdit((secret,), delete=True)
    result = write_patched(doc, [edit], within=within)
    if not result.changed:
        return "nothing_to_undo", f"{secret} is already as it was."
    return "reverted", f"{secret} is back to the key that was active before."


def _id(entry: dict[str, Any]) -> str | None:
    value = entry.get("id")
    return value if isinstance(value, str) else None


def _write(
    path: Path, doc: Document | None, secret: str, value: Any, *, created: bool, within: Path | None
) -> None:
    if doc is not None and not created:
        write_patched(doc, [PatchEdit((secret,), value)], within=within)
        logger.info("set the active key of %s in %s", secret, path)
        return
    _create_exclusive(path, dumps_st({secret: value}).encode(), within=within)
    logger.info("created %s with %s", path, secret)


def _create_exclusive(path: Path, raw: bytes, *, within: Path | None = None) -> None:
    """A new secrets file, only if there still is none: a file ST created meanwhile is never replaced.

    The bytes go to a temp name first and are linked into place, which fails when the name exists, so the
    file appears complete or not at all.
    """
    tmp = path.with_name(f".{path.name}.nanogpt-companion.{uuid.uuid4().hex[:12]}.tmp")
    replace_file_atomic(tmp, raw, expected_sha256=None, mode=0o600, follow_symlinks=False, within=within)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ConcurrentModification(path) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError as exc:
            logger.warning("could not remove temp file %s: %s", tmp, exc.strerror)
    logger.debug("new %s (%s)", path.name, sha256_hex(raw)[:12])
