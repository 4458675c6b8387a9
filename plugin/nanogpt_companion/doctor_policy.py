"""Which findings the doctor may apply by itself, offer, fold into "Fix all", or keep quiet about.

One place decides, for the report, automatic fixes, ``Fix all`` and the CLI alike:

- **Policy** per rule: the user's choice (API), else the config file's, else the rule's default. ``off``
  hides the rule's findings everywhere.
- **Declines**: when the user undoes a fix, or puts the old value back after an automatic one, the value
  they kept is remembered for that setting (its "slot": file + key path). While the setting still holds
  that value the fix is only offered, never applied by itself, whatever model or source the user picks
  next. Choosing another value, or pressing Fix, ends the decline.
- **Cost**: a fix that makes each message cost more (``raises_cost``) is never automatic and never part of
  ``Fix all``; neither are advice-only findings nor info-level suggestions (preferences, not problems).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from nanogpt_companion.doctor.engine import RULES
from nanogpt_companion.doctor.finding import Finding, Policy
from nanogpt_companion.store import Store


def slot_of(finding: Finding) -> str:
    """The setting a finding would change: file plus key paths. Stable across models and sources."""
    where = "settings" if finding.preset is None else f"preset:{finding.preset}"
    paths = orjson.dumps([list(op.path) for op in finding.patch]).decode() if finding.patch else finding.id
    return f"{where}|{paths}"


def kept_value(finding: Finding) -> str:
    """What the user has in that slot now (the values the fix would replace)."""
    return _dump([op.old for op in finding.patch])


def written_value(finding: Finding) -> str:
    """What the slot holds once the fix is applied, in the same form."""
    return _dump([op.value for op in finding.patch])


def _dump(values: list[Any]) -> str:
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()


def _value_at(data: Any, path: list[Any]) -> Any:
    node = data
    for part in path:
        if isinstance(node, Mapping) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def value_in(slot: str, documents: Mapping[str | None, Any]) -> str | None:
    """What the slot holds in ``documents`` (None: the live settings; a stem: that preset), in the form
    ``kept_value`` gives; None when the slot cannot be read (an old-format row, a deleted preset)."""
    where, _, paths_json = slot.partition("|")
    preset = where.split(":", 1)[1] if where.startswith("preset:") else None
    if where != "settings" and preset is None:
        return None
    try:
        paths = orjson.loads(paths_json)
    except orjson.JSONDecodeError:
        return None
    if preset not in documents or not isinstance(paths, list):
        return None
    return _dump([_value_at(documents[preset], path) for path in paths if isinstance(path, list)])


@dataclass(frozen=True)
class Decision:
    policy: Policy  # auto / ask / off, for this finding (not just its rule)
    declined: bool
    fix_all: bool  # part of "Fix all" and the CLI's --fix


class PolicyBook:
    def __init__(self, store: Store, configured: Mapping[str, Policy]) -> None:
        self._store = store
        self._configured = dict(configured)

    async def explicit(self, handle: str) -> dict[str, Policy]:
        """Policies somebody chose: the user's (through the API), else the config file's."""
        result: dict[str, Policy] = dict(self._configured)
        for rule, policy in (await self._store.get_policies(handle)).items():
            if policy in ("auto", "ask", "off"):
                result[rule] = policy  # type: ignore[assignment]  # checked just above
        return result

    async def effective(self, handle: str) -> dict[str, Policy]:
        """Per rule: the user's choice, else the config's, else the rule's default."""
        result: dict[str, Policy] = {rule.id: rule.default_policy for rule in RULES}
        result.update(await self.explicit(handle))
        return result

    async def set(self, handle: str, rule: str, policy: Policy) -> dict[str, Policy]:
        if rule not in {r.id for r in RULES}:
            raise KeyError(rule)
        await self._store.set_policy(handle, rule, policy)
        return await self.effective(handle)

    async def _rows(self, handle: str) -> dict[str, tuple[str, str] | None]:
        """Slot -> (the value the user kept, the value the declined fix wrote); None for a row this version
        cannot read (older rows were keyed by finding id)."""
        rows: dict[str, tuple[str, str] | None] = {}
        for slot, stored in (await self._store.declined(handle)).items():
            try:
                pair = orjson.loads(stored)
            except orjson.JSONDecodeError:
                pair = None
            ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) for v in pair)
            rows[slot] = (pair[0], pair[1]) if ok else None
        return rows

    async def declines(self, handle: str) -> dict[str, str]:
        """Slot -> the value the user kept (the fix is declined while the setting holds it)."""
        return {slot: row[0] for slot, row in (await self._rows(handle)).items() if row is not None}

    async def decline(self, handle: str, slot: str, kept: str, fixed: str) -> None:
        """The user keeps ``kept`` where the fix would write (or wrote) ``fixed``."""
        await self._store.decline(handle, slot, orjson.dumps([kept, fixed]).decode())

    async def clear(self, handle: str, finding: Finding) -> None:
        await self._store.clear_declined(handle, slot_of(finding))

    async def reconcile(self, handle: str, documents: Mapping[str | None, Any]) -> None:
        """Drop declines the user moved on from: the setting now holds a third value (neither the one they
        kept nor the fix's, which is still there until an undo lands in the file), its preset is gone, or
        the row predates slots. Model and source changes do not touch the setting: the decline stays."""
        for slot, row in (await self._rows(handle)).items():
            if row is None or value_in(slot, documents) not in row:
                await self._store.clear_declined(handle, slot)

    @staticmethod
    def decide(finding: Finding, explicit: Mapping[str, Policy], declines: Mapping[str, str]) -> Decision:
        policy = explicit.get(finding.rule, finding.default_policy)
        declined = declines.get(slot_of(finding)) == kept_value(finding) if finding.patch else False
        if policy == "off":
            return Decision("off", declined, False)
        # A rule's default can be `auto` while one of its findings is only safe to offer: it replaces a
        # value the user kept on purpose, has nothing to apply, or costs money.
        if policy == "auto" and (declined or not finding.fixable or finding.raises_cost):
            policy = "ask"
        fix_all = (
            finding.fixable
            and not declined
            and not finding.raises_cost
            and finding.severity in ("error", "warning")
        )
        return Decision(policy, declined, fix_all)
