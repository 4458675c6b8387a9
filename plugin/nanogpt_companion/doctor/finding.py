"""What a doctor rule reports: a finding, and the patch that would fix it.

A patch is a list of key-path assignments on one document (``settings.json`` or one Chat Completion
preset). The service applies it to the file (compare-and-swap) or sends it to the open ST tab, whose
extension maps each path to ST's own UI handler. ``old`` is what the rule saw, so both paths can refuse
to act when the value has moved on since.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["error", "warning", "info"]
Policy = Literal["auto", "ask", "off"]
TargetKind = Literal["settings", "preset"]
KeyPath = tuple[str | int, ...]


class PatchOp(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    path: KeyPath
    value: Any
    old: Any = None
    # False when the key did not exist: undo then removes it instead of restoring a value.
    existed: bool = True


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    id: str
    rule: str
    title: str
    explanation: str
    severity: Severity
    target: TargetKind = "settings"
    preset: str | None = None  # file stem under "OpenAI Settings/" when target == "preset"
    patch: tuple[PatchOp, ...] = ()  # empty: advice only, nothing to apply
    default_policy: Policy = "ask"
    # Applying it makes each message cost more (a bigger context, web search, images): such a fix is only
    # ever applied one at a time by the user, never by "Fix all" or automatically.
    raises_cost: bool = False
    # Data for the UI (e.g. suggested models); never needed to apply the patch.
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def fixable(self) -> bool:
        return bool(self.patch)


def finding_id(rule: str, target: str, patch: tuple[PatchOp, ...] | list[PatchOp], extra: str = "") -> str:
    """A stable id: the same situation yields the same id across scans, a new situation a new one.

    Stability matters: the extension and the API refer to findings by id between two scans, and the
    "user reverted our fix" memory is keyed on it.
    """
    material = orjson.dumps(
        [rule, target, extra, [[list(op.path), op.value, op.old] for op in patch]],
        option=orjson.OPT_SORT_KEYS,
    )
    return f"{rule}:{hashlib.sha256(material).hexdigest()[:12]}"
