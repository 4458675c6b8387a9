"""Fixes written to ST's files while no tab is open, and the journal that makes every fix undoable.

A file fix is a compare-and-swap: each op must still see the value the rule saw, the document is re-read
before the atomic replace, and only the patched values' bytes change (``sillytavern.patching``). Every
applied change, written here or applied live by the tab, gets a journal row holding the old value, so Undo
can put it back the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor_result import FixResult
from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import (
    ConcurrentModification,
    DocumentMissing,
    DocumentUnreadable,
    WriteFailed,
)
from nanogpt_companion.sillytavern.patching import PatchEdit, write_patched
from nanogpt_companion.store import JournalEntry, JournalMode, Store


class FileFixer:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def apply(self, handle: str, paths: UserPaths, finding: Finding) -> FixResult:
        try:
            target = target_path(paths, finding)
            result = await asyncio.to_thread(patch_file, target, finding.patch, within=paths.root)
        except ConcurrentModification:
            return FixResult(
                finding.id, "conflict", "The file changed while we were fixing it; nothing was written."
            )
        except (WriteFailed, DocumentUnreadable, DocumentMissing, ValueError) as exc:
            return FixResult(finding.id, "failed", f"Nothing was changed: {exc}")
        if result is None:
            return FixResult(
                finding.id, "conflict", "The value changed since it was checked; nothing was written."
            )
        journal_ids = await self.journal(handle, finding, "file")
        return FixResult(
            finding.id, "applied", f"Fixed in {target.name}", journal_ids[0] if journal_ids else None
        )

    async def journal(self, handle: str, finding: Finding, mode: JournalMode) -> list[int]:
        """One journal row per changed value, so each can be undone on its own."""
        file_label = "settings" if finding.target == "settings" else f"preset:{finding.preset}"
        return [
            await self._store.journal_add(
                JournalEntry(
                    user=handle,
                    file=file_label,
                    key_path=tuple(op.path),
                    old_value=op.old,
                    new_value=op.value,
                    existed=op.existed,
                    rule=finding.rule,
                    finding_id=finding.id,
                    created_at=time.time(),
                    mode=mode,
                )
            )
            for op in finding.patch
        ]

    async def entry(self, journal_id: int) -> JournalEntry | None:
        return await self._store.journal_get(journal_id)

    async def entries(self, handle: str, limit: int) -> list[JournalEntry]:
        return await self._store.journal_list(handle, limit)

    async def mark_undone(self, journal_id: int) -> None:
        await self._store.journal_mark_undone(journal_id, time.time())

    async def revert(self, paths: UserPaths, entry: JournalEntry) -> FixResult:
        """Put the journalled old value back in the file (or remove a key the fix added)."""
        reverse = reverse_of(entry)
        journal_id = str(entry.id)
        try:
            target = target_path(paths, reverse)
            done = await asyncio.to_thread(
                patch_file, target, reverse.patch, delete=not entry.existed, within=paths.root
            )
        except ConcurrentModification:
            return FixResult(journal_id, "conflict", "The file changed meanwhile; try again.")
        except (WriteFailed, DocumentUnreadable, DocumentMissing, ValueError) as exc:
            return FixResult(journal_id, "failed", f"Nothing was changed: {exc}")
        if done is None:
            return FixResult(
                journal_id, "conflict", "The value was changed since the fix; leaving it as it is."
            )
        if entry.id is not None:
            await self.mark_undone(entry.id)
        return FixResult(journal_id, "applied", "Reverted.", entry.id)


def reverse_of(entry: JournalEntry) -> Finding:
    """The journalled change turned around, as a finding both fix paths can carry out."""
    is_preset = entry.file.startswith("preset:")
    return Finding(
        id=entry.finding_id,
        rule=entry.rule,
        title="Undo",
        explanation="Puts back the value that was there before the fix.",
        severity="info",
        target="preset" if is_preset else "settings",
        preset=entry.file.split(":", 1)[1] if is_preset else None,
        patch=(
            PatchOp(
                path=entry.key_path,
                value=entry.old_value if entry.existed else None,
                old=entry.new_value,
                existed=True,
            ),
        ),
    )


def target_path(paths: UserPaths, finding: Finding) -> Path:
    if finding.target == "preset":
        if not finding.preset or "/" in finding.preset or finding.preset.startswith("."):
            raise ValueError("bad preset name")
        return paths.presets_dir / f"{finding.preset}.json"
    return paths.settings


_MISSING = object()


def _value_at(data: Any, path: Sequence[str | int]) -> Any:
    node = data
    for part in path:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return _MISSING
    return node


def patch_file(
    path: Path, ops: Sequence[PatchOp], *, delete: bool = False, within: Path | None = None
) -> str | None:
    """Patch one file if every op still sees the value the rule saw; returns the new hash or None.

    Runs in a worker thread. The document read here is the compare-and-swap base: ``write_patched``
    re-reads and refuses to replace the file if it changed after this read. ``within``: the user's
    folder; a link leading out of it is never written through.
    """
    doc = read_document(path)
    for op in ops:
        current = _value_at(doc.data, op.path)
        expected_missing = not op.existed
        if expected_missing and current is not _MISSING:
            return None
        if not expected_missing and current != op.old:
            return None
    edits = [PatchEdit(path=tuple(op.path), value=op.value, delete=delete) for op in ops]
    return write_patched(doc, edits, within=within).new_sha256
