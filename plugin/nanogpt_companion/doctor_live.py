"""Fixes for an open ST tab: sent as ``fix`` events, applied by the extension through ST's own controls,
and acknowledged back.

While a tab holds the extension's event stream, ST's browser owns ``settings.json`` and overwrites outside
edits on its next save (DESIGN.md flow 3), so a fix for it must go through the tab. This keeps the fixes
the tab has not confirmed yet, so one is never sent twice while it is on its way.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.doctor_result import FixResult
from nanogpt_companion.events import EventBus

LIVE_ACK_TIMEOUT = 30.0  # a live fix not acknowledged by then may be sent again


@dataclass(frozen=True)
class PendingLiveFix:
    fix_id: str
    finding: Finding
    sent_at: float
    change: str  # in ST's words, for the tab's toast and the journal
    undo_of: int | None = None  # the journal entry this reverts; None for a fix


class LiveDispatcher:
    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._pending: dict[str, dict[str, PendingLiveFix]] = {}

    def tab_open(self, handle: str) -> bool:
        return self._bus.tab_open(handle)

    def send(self, handle: str, finding: Finding, change: str, *, undo_of: int | None = None) -> FixResult:
        pending = self._pending.setdefault(handle, {})
        now = time.time()
        for sent in pending.values():
            same = sent.finding.id == finding.id and sent.undo_of == undo_of
            if same and now - sent.sent_at < LIVE_ACK_TIMEOUT:
                return FixResult(
                    finding.id, "sent_live", "Already sent to your SillyTavern tab; waiting for it."
                )
        fix = PendingLiveFix(secrets.token_urlsafe(9), finding, now, change, undo_of)
        pending[fix.fix_id] = fix
        self._bus.publish(handle, "fix", _event(fix))
        return FixResult(
            finding.id, "sent_live", "Sent to your open SillyTavern tab, which applies and saves it."
        )

    def take(self, handle: str, fix_id: str) -> PendingLiveFix | None:
        """The tab answered for ``fix_id``: it is no longer pending (None if unknown or already answered)."""
        return self._pending.get(handle, {}).pop(fix_id, None)

    def drop_all(self, handle: str) -> list[PendingLiveFix]:
        """The tab went away without answering: these fixes were never applied."""
        return list(self._pending.pop(handle, {}).values())

    def pending(self, handle: str) -> list[Finding]:
        """Findings sent to the tab and not answered yet."""
        return [fix.finding for fix in self._pending.get(handle, {}).values()]


def _event(fix: PendingLiveFix) -> dict[str, Any]:
    finding = fix.finding
    return {
        "fix_id": fix.fix_id,
        "undo_of": fix.undo_of,
        "finding_id": finding.id,
        "rule": finding.rule,
        "title": finding.title,
        "explanation": finding.explanation,
        "change": fix.change,
        "target": finding.target,
        "preset": finding.preset,
        "patch": [
            {"path": list(op.path), "value": op.value, "old": op.old, "existed": op.existed}
            for op in finding.patch
        ],
    }
