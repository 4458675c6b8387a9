"""The doctor as a service: read a user's ST files, diagnose, and put fixes where the truth lives.

Where a fix goes (DESIGN.md flow 3): while the user's ST tab holds the extension's event stream, ST's
browser owns ``settings.json`` and overwrites outside edits on its next save, so fixes go to the tab as
``fix`` events and are applied through ST's own UI handlers. With no tab open the file is patched
(compare-and-swap, atomic replace, journalled for undo). A fix is only ever sent down one of the two paths.

Respecting the user: when a value we fixed automatically comes back, the user put it back on purpose.
The finding is then remembered as declined and only offered (``ask``) until the situation (source, model,
endpoint) changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nanogpt_companion.account import AccountService
from nanogpt_companion.catalog import CatalogService, CatalogUnavailable
from nanogpt_companion.config import Settings
from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import RULES, diagnose
from nanogpt_companion.doctor.families import load_family_table
from nanogpt_companion.doctor.finding import Finding, PatchOp, Policy
from nanogpt_companion.doctor_presets import PresetReader
from nanogpt_companion.domain import AccountSnapshot, CatalogEntry, ErrorInfo
from nanogpt_companion.events import EventBus
from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import (
    ConcurrentModification,
    DocumentMissing,
    DocumentUnreadable,
    WriteFailed,
)
from nanogpt_companion.sillytavern.patching import PatchEdit, write_patched
from nanogpt_companion.sillytavern.secrets import secrets_format
from nanogpt_companion.sillytavern.server_config import ServerExposure, read_server_exposure
from nanogpt_companion.sillytavern.version import UNKNOWN_VERSION, STVersion, detect_st_version
from nanogpt_companion.store import JournalEntry, Store
from nanogpt_companion.users import UserRegistry

log = logging.getLogger(__name__)

LIVE_ACK_TIMEOUT = 30.0  # a live fix not acknowledged by then may be sent again
CATALOG_WAIT = 10.0  # how long a scan waits for a cold catalogue before diagnosing without it
FixStatus = Literal["applied", "sent_live", "conflict", "failed", "not_found", "declined"]


@dataclass(frozen=True)
class FixResult:
    id: str
    status: FixStatus
    message: str
    journal_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "message": self.message, "journal_id": self.journal_id}


@dataclass
class PendingLiveFix:
    fix_id: str
    finding: Finding
    sent_at: float
    journal_ids: list[int] = field(default_factory=list)
    undo_of: int | None = None


@dataclass
class UserState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settings_sha: str | None = None  # content last diagnosed: an identical re-save by ST changes nothing
    preset_shas: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    version: STVersion = UNKNOWN_VERSION
    situation: str = ""
    checked_at: float | None = None
    error: ErrorInfo | None = None
    auto_fixed: set[str] = field(default_factory=set)  # finding ids we fixed automatically
    pending: dict[str, PendingLiveFix] = field(default_factory=dict)  # fix_id -> live fix awaiting ack


def situation_of(settings: Any) -> str:
    """What a declined fix is tied to: the connection (source, model, endpoint) it was declined for."""
    oai = settings.get("oai_settings", {}) if isinstance(settings, dict) else {}
    if not isinstance(oai, dict):
        oai = {}
    source = str(oai.get("chat_completion_source", ""))
    model = str(oai.get("nanogpt_model" if source == "nanogpt" else "custom_model", ""))
    url = str(oai.get("custom_url", "")) if source == "custom" else ""
    main_api = str(settings.get("main_api", "")) if isinstance(settings, dict) else ""
    return "|".join((main_api, source, model, url))


class DoctorService:
    def __init__(
        self,
        *,
        users: UserRegistry,
        store: Store,
        bus: EventBus,
        catalog: CatalogService,
        account: AccountService,
        settings: Settings,
        offline: bool = False,
    ) -> None:
        self._offline = offline  # CLI --offline: diagnose with what is cached, never contact NanoGPT
        self._users = users
        self._store = store
        self._bus = bus
        self._catalog = catalog
        self._account = account
        self._settings = settings
        self._family_table = load_family_table(settings.ppp_families_file)
        self._presets = PresetReader()  # re-reads a preset only when its file changed
        self._state: dict[str, UserState] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register for tab changes and scan every user in the background (start-up never waits on
        NanoGPT: the first scan may need the catalogue)."""
        self._bus.on_tab_change(self._on_tab_change)
        for handle in self._users.handles():
            self._spawn(self.check_user(handle))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_tab_change(self, handle: str, is_open: bool) -> None:
        state = self._state.get(handle)
        if state is not None and not is_open:
            # Live fixes that never came back belong to the file path now. They were never applied, so
            # seeing their findings again on the next scan is not the user reverting them.
            for pending in state.pending.values():
                state.auto_fixed.discard(pending.finding.id)
            state.pending.clear()
        if handle in self._users.handles():
            self._spawn(self.check_user(handle, force=True))

    # ---- queries ---------------------------------------------------------------------------------------

    def _user_state(self, handle: str) -> UserState:
        return self._state.setdefault(handle, UserState())

    def st_version(self, handle: str) -> STVersion:
        return self._user_state(handle).version

    async def report(self, handle: str) -> dict[str, Any]:
        state = self._user_state(handle)
        if state.checked_at is None:
            await self.check_user(handle)
        policies = await self.explicit_policies(handle)
        declined = await self._store.declined(handle)
        return {
            "findings": [self._finding_json(f, policies, declined) for f in state.findings],
            "st_version": state.version.display,
            "checked_at": state.checked_at,
            "tab_open": self._bus.tab_open(handle),
            "error": state.error.model_dump() if state.error else None,
        }

    def _finding_json(
        self, finding: Finding, policies: dict[str, Policy], declined: dict[str, str]
    ) -> dict[str, Any]:
        data = finding.model_dump(mode="json")
        data["policy"] = self._policy_for(finding, policies, declined)
        data["fixable"] = finding.fixable
        data["declined"] = finding.id in declined
        return data

    async def explicit_policies(self, handle: str) -> dict[str, Policy]:
        """Policies somebody chose: the user's (through the API), else the config file's."""
        result: dict[str, Policy] = dict(self._settings.doctor_policies)
        for rule, policy in (await self._store.get_policies(handle)).items():
            if policy in ("auto", "ask", "off"):
                result[rule] = policy  # type: ignore[assignment]  # checked just above
        return result

    async def effective_policies(self, handle: str) -> dict[str, Policy]:
        """Per rule: the user's choice, else the config's, else the rule's default."""
        result: dict[str, Policy] = {rule.id: rule.default_policy for rule in RULES}
        result.update(await self.explicit_policies(handle))
        return result

    @staticmethod
    def _policy_for(finding: Finding, explicit: dict[str, Policy], declined: dict[str, str]) -> Policy:
        """A rule's default can be ``auto`` while one of its findings is only safe to offer (it would
        replace a value the user chose): the finding's own default then wins unless somebody chose."""
        policy = explicit.get(finding.rule, finding.default_policy)
        if policy == "auto" and (finding.id in declined or not finding.fixable):
            return "ask"
        return policy

    async def set_policy(self, handle: str, rule: str, policy: Policy) -> dict[str, Policy]:
        if rule not in {r.id for r in RULES}:
            raise KeyError(rule)
        await self._store.set_policy(handle, rule, policy)
        self._spawn(self.check_user(handle, force=True))
        return await self.effective_policies(handle)

    # ---- scanning --------------------------------------------------------------------------------------

    async def check_user(self, handle: str, *, force: bool = False, act: bool = True) -> None:
        """Re-read the user's files and diagnose; apply ``auto`` fixes. Never raises for bad files."""
        user = self._users.get(handle)
        if user is None or user.paths is None:
            return
        state = self._user_state(handle)
        async with state.lock:
            try:
                changed = await self._scan(handle, user.paths, state, force=force)
            except Exception:
                log.exception("doctor scan failed for %s", handle)
                return
            if changed and act:
                await self._act_on_auto(handle, user.paths, state)

    async def _scan(self, handle: str, paths: UserPaths, state: UserState, *, force: bool) -> bool:
        try:
            doc = await asyncio.to_thread(read_document, paths.settings)
        except DocumentMissing:
            return False
        except DocumentUnreadable as exc:
            # Half-written files were already retried; this one is really broken. Touch nothing, say why.
            state.error = ErrorInfo(code="settings_unreadable", message=str(exc))
            state.findings = []
            state.checked_at = time.time()
            state.settings_sha = None
            self._publish_findings(handle)
            return False
        presets = await asyncio.to_thread(self._presets.read, paths)
        preset_shas = presets.versions
        if not force and doc.sha256 == state.settings_sha and preset_shas == state.preset_shas:
            return False  # identical re-save (ST saves often) or our own write: nothing new
        state.settings_sha = doc.sha256
        state.preset_shas = preset_shas
        state.error = None
        fmt = await asyncio.to_thread(secrets_format, paths.secrets)
        state.version = detect_st_version(doc.data, fmt)
        new_situation = situation_of(doc.data)
        if state.situation and new_situation != state.situation:
            await self._forget_declines(handle)
            state.auto_fixed.clear()
        state.situation = new_situation
        catalogue, account = await self._context_data(handle)
        ctx = DoctorContext(
            settings=doc.data,
            st_version=state.version,
            presets=presets.data,
            catalogue=catalogue,
            account=account,
            family_table=self._family_table,
            st_server=await self._st_server(),
        )
        findings = diagnose(ctx) + presets.problems
        # A finding we fixed automatically is back: the user put the value back. Respect that.
        awaiting_tab = {p.finding.id for p in state.pending.values()}
        for finding in findings:
            # A live fix the tab has not applied yet is still expected to be seen (ST may save other
            # changes first); only a finding back after the fix took effect is the user's choice.
            if finding.id in state.auto_fixed and finding.id not in awaiting_tab:
                state.auto_fixed.discard(finding.id)
                await self._store.decline(handle, finding.id, state.situation)
                log.info("user %s reverted the %s fix; keeping it as a suggestion", handle, finding.rule)
        state.findings = findings
        state.checked_at = time.time()
        self._publish_findings(handle)
        return True

    async def _st_server(self) -> ServerExposure | None:
        """ST's own server settings, for ``st.exposed`` (needs the ST folder, not just a data root)."""
        st_dir = self._settings.sillytavern
        if st_dir is None:
            return None
        return await asyncio.to_thread(read_server_exposure, st_dir, self._users.data_root)

    async def _context_data(
        self, handle: str
    ) -> tuple[Mapping[str, CatalogEntry] | None, AccountSnapshot | None]:
        key = await self._users.key_for(handle)
        if self._offline:
            stored = await self._catalog.stored(key)
            return (stored.by_id if stored is not None else None), None
        snapshot = self._catalog.cached(key)
        if snapshot is None:
            with contextlib.suppress(CatalogUnavailable, TimeoutError):
                snapshot = (await asyncio.wait_for(self._catalog.get(key), CATALOG_WAIT)).snapshot
        account = self._account.cached(handle)
        return (snapshot.by_id if snapshot is not None else None), account

    def _publish_findings(self, handle: str) -> None:
        async def publish() -> None:
            self._bus.publish(handle, "findings", await self.report(handle))

        self._spawn(publish())

    async def _forget_declines(self, handle: str) -> None:
        for finding_id in await self._store.declined(handle):
            await self._store.clear_declined(handle, finding_id)

    # ---- fixing ----------------------------------------------------------------------------------------

    async def _act_on_auto(self, handle: str, paths: UserPaths, state: UserState) -> None:
        policies = await self.explicit_policies(handle)
        declined = await self._store.declined(handle)
        auto = [f for f in state.findings if self._policy_for(f, policies, declined) == "auto"]
        if not auto:
            return
        results = await self._apply_locked(handle, paths, state, auto, automatic=True)
        for result in results:
            log.info("auto fix %s for %s: %s", result.id, handle, result.status)

    async def apply(self, handle: str, ids: Sequence[str] | None) -> list[FixResult]:
        """Apply findings by id (``None`` = every fixable finding). Works for ``ask`` findings too."""
        user = self._users.get(handle)
        if user is None or user.paths is None:
            return [FixResult(i, "not_found", "This user has no SillyTavern files.") for i in ids or ()]
        state = self._user_state(handle)
        async with state.lock:
            await self._scan(handle, user.paths, state, force=False)
            by_id = {f.id: f for f in state.findings}
            wanted = (
                [f for f in state.findings if f.fixable]
                if ids is None
                else [by_id[i] for i in ids if i in by_id]
            )
            missing = [
                FixResult(i, "not_found", "That finding no longer applies.")
                for i in ids or ()
                if i not in by_id
            ]
            for finding in wanted:
                if finding.id in (await self._store.declined(handle)):
                    await self._store.clear_declined(handle, finding.id)  # the user asked for it explicitly
            return missing + await self._apply_locked(handle, user.paths, state, wanted, automatic=False)

    async def _apply_locked(
        self, handle: str, paths: UserPaths, state: UserState, findings: Iterable[Finding], *, automatic: bool
    ) -> list[FixResult]:
        results: list[FixResult] = []
        wrote_file = False
        for finding in findings:
            if not finding.fixable:
                results.append(
                    FixResult(finding.id, "failed", "This finding is advice only; nothing to apply.")
                )
                continue
            if finding.target == "settings" and self._bus.tab_open(handle):
                results.append(self._send_live(handle, state, finding))
            else:
                result = await self._apply_to_file(handle, paths, finding)
                wrote_file = wrote_file or result.status == "applied"
                results.append(result)
            if automatic and results[-1].status in ("applied", "sent_live"):
                state.auto_fixed.add(finding.id)
        if wrote_file:
            await self._scan(
                handle, paths, state, force=True
            )  # findings reflect the fixed file; no new round
        return results

    def _send_live(
        self, handle: str, state: UserState, finding: Finding, *, undo_of: int | None = None
    ) -> FixResult:
        now = time.time()
        for pending in state.pending.values():
            same = pending.finding.id == finding.id and pending.undo_of == undo_of
            if same and now - pending.sent_at < LIVE_ACK_TIMEOUT:
                return FixResult(
                    finding.id, "sent_live", "Already sent to your SillyTavern tab; waiting for it."
                )
        fix_id = secrets.token_urlsafe(9)
        state.pending[fix_id] = PendingLiveFix(fix_id, finding, now, undo_of=undo_of)
        self._bus.publish(handle, "fix", self._fix_event(fix_id, finding, undo_of))
        return FixResult(
            finding.id, "sent_live", "Sent to your open SillyTavern tab, which applies and saves it."
        )

    @staticmethod
    def _fix_event(fix_id: str, finding: Finding, undo_of: int | None = None) -> dict[str, Any]:
        return {
            "fix_id": fix_id,
            "undo_of": undo_of,  # the journal id this reverts; None for a fix
            "finding_id": finding.id,
            "rule": finding.rule,
            "title": finding.title,
            "explanation": finding.explanation,
            "target": finding.target,
            "preset": finding.preset,
            "patch": [
                {"path": list(op.path), "value": op.value, "old": op.old, "existed": op.existed}
                for op in finding.patch
            ],
        }

    def _target_path(self, paths: UserPaths, finding: Finding) -> Path:
        if finding.target == "preset":
            if not finding.preset or "/" in finding.preset or finding.preset.startswith("."):
                raise ValueError("bad preset name")
            return paths.presets_dir / f"{finding.preset}.json"
        return paths.settings

    async def _apply_to_file(self, handle: str, paths: UserPaths, finding: Finding) -> FixResult:
        try:
            target = self._target_path(paths, finding)
            result = await asyncio.to_thread(_patch_file, target, finding.patch, within=paths.root)
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
        journal_ids = []
        file_label = "settings" if finding.target == "settings" else f"preset:{finding.preset}"
        for op in finding.patch:
            journal_ids.append(
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
                        mode="file",
                    )
                )
            )
        return FixResult(
            finding.id, "applied", f"Fixed in {target.name}.", journal_ids[0] if journal_ids else None
        )

    async def acknowledge(self, handle: str, fix_id: str, status: str, message: str) -> list[int] | None:
        """The tab reports a live fix back. Journal it so it can be undone like a file fix.

        Returns the journal ids written (empty for a failure or an undo), or None for an unknown fix.
        """
        state = self._user_state(handle)
        pending = state.pending.pop(fix_id, None)
        if pending is None:
            return None
        if status != "applied":
            state.auto_fixed.discard(pending.finding.id)
            log.warning("live fix %s failed in the tab: %s", pending.finding.rule, message[:200])
            return []
        if pending.undo_of is not None:
            await self._store.journal_mark_undone(pending.undo_of, time.time())
            return []
        journal_ids: list[int] = []
        for op in pending.finding.patch:
            journal_id = await self._store.journal_add(
                JournalEntry(
                    user=handle,
                    file="settings",
                    key_path=tuple(op.path),
                    old_value=op.old,
                    new_value=op.value,
                    existed=op.existed,
                    rule=pending.finding.rule,
                    finding_id=pending.finding.id,
                    created_at=time.time(),
                    mode="live",
                )
            )
            journal_ids.append(journal_id)
        return journal_ids

    async def journal(self, handle: str, limit: int = 50) -> list[dict[str, Any]]:
        """Recent fixes for this user, newest first, with what undo would put back."""
        return [
            {
                "journal_id": e.id,
                "rule": e.rule,
                "finding_id": e.finding_id,
                "file": e.file,
                "path": list(e.key_path),
                "old_value": e.old_value,
                "new_value": e.new_value,
                "existed": e.existed,
                "mode": e.mode,
                "created_at": e.created_at,
                "undone_at": e.undone_at,
            }
            for e in await self._store.journal_list(handle, limit)
        ]

    async def undo(self, handle: str, journal_id: int) -> FixResult:
        entry = await self._store.journal_get(journal_id)
        if entry is None or entry.user != handle:
            return FixResult(str(journal_id), "not_found", "No such fix in your journal.")
        if entry.undone_at is not None:
            return FixResult(str(journal_id), "conflict", "That fix was already undone.")
        user = self._users.get(handle)
        if user is None or user.paths is None:
            return FixResult(str(journal_id), "not_found", "This user has no SillyTavern files.")
        state = self._user_state(handle)
        # Undoing is an explicit "no" to this fix: never re-apply it automatically in this situation.
        await self._store.decline(handle, entry.finding_id, state.situation)
        state.auto_fixed.discard(entry.finding_id)
        reverse = Finding(
            id=entry.finding_id,
            rule=entry.rule,
            title="Undo",
            explanation="Puts back the value that was there before the fix.",
            severity="info",
            target="preset" if entry.file.startswith("preset:") else "settings",
            preset=entry.file.split(":", 1)[1] if entry.file.startswith("preset:") else None,
            patch=(PatchOp(path=entry.key_path, value=entry.old_value, old=entry.new_value, existed=True),)
            if entry.existed
            else (PatchOp(path=entry.key_path, value=None, old=entry.new_value, existed=True),),
        )
        async with state.lock:
            if reverse.target == "settings" and self._bus.tab_open(handle):
                result = self._send_live(handle, state, reverse, undo_of=journal_id)
                return FixResult(str(journal_id), result.status, result.message, journal_id)
            try:
                target = self._target_path(user.paths, reverse)
                done = await asyncio.to_thread(
                    _patch_file, target, reverse.patch, delete=not entry.existed, within=user.paths.root
                )
            except ConcurrentModification:
                return FixResult(str(journal_id), "conflict", "The file changed meanwhile; try again.")
            except (WriteFailed, DocumentUnreadable, DocumentMissing, ValueError) as exc:
                return FixResult(str(journal_id), "failed", f"Nothing was changed: {exc}")
            if done is None:
                return FixResult(
                    str(journal_id), "conflict", "The value was changed since the fix; leaving it as it is."
                )
            await self._store.journal_mark_undone(journal_id, time.time())
            await self._scan(handle, user.paths, state, force=True)
        return FixResult(str(journal_id), "applied", "Reverted.", journal_id)


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


def _patch_file(
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
