"""What applying (or undoing) one finding came to: the answer of ``POST /api/doctor/fix`` and ``/undo``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FixStatus = Literal["applied", "sent_live", "conflict", "failed", "not_found", "declined"]


@dataclass(frozen=True)
class FixResult:
    id: str
    status: FixStatus
    message: str
    journal_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "message": self.message, "journal_id": self.journal_id}
