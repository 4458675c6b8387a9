"""The doctor as a service: read a user's ST files, diagnose, and put fixes where the truth lives.

This module scans (reads the files, builds the context, runs the rules) and routes; the decisions and the
writing live in small collaborators, one job each:

- ``doctor_policy.PolicyBook``: policies, declines, and which findings are automatic or in "Fix all";
- ``doctor_live.LiveDispatcher``: fixes for an open ST tab (``fix`` events, acknowledgements);
- ``doctor_files.FileFixer``: compare-and-swap patches of the files with no tab open, and the journal.

Where a fix goes (DESIGN.md flow 3): while the user's ST tab holds the extension's event stream, ST's
browser owns ``settings.json`` and overwrites outside edits on its next save, so settings fixes go to the
tab. With no tab open the file is patched. A fix is only ever sent down one of the two paths (``_route``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from nanogpt_companion.account import AccountService
from nanogpt_companion.catalog import CatalogDiff, CatalogService, CatalogUnavailable
from nanogpt_companion.config import Settings
from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import diagnose
from nanogpt_companion.doctor.families import load_family_table
from nanogpt_companion.doctor.finding import Finding, Policy
from nanogpt_companion.doctor.rules.common import ppp_choices
from nanogpt_companion.doctor.rules.providers import chosen_provider_model, providers_lookup_id
from nanogpt_companion.doctor.symptoms import causes as symptom_causes
from nanogpt_companion.doctor.symptoms import with_tab_settings
from nanogpt_companion.doctor_files import FileFixer, reverse_of
from nanogpt_companion.doctor_live import LiveDispatcher
from nanogpt_companion.doctor_policy import (
    Decision,
    PolicyBook,
    kept_value,
    slot_of,
    value_in,
    written_value,
)
from nanogpt_companion.doctor_presets import PresetReader
from nanogpt_companion.doctor_result import FixResult
from nanogpt_companion.domain import AccountSnapshot, CatalogEntry, ErrorInfo, ModelProviders
from nanogpt_companion.events import EventBus
from nanogpt_companion.nanogpt.errors import NanoGPTError
from nanogpt_companion.providers import ProviderService
from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import DocumentMissing, DocumentUnreadable
from nanogpt_companion.sillytavern.labels import describe_change
from nanogpt_companion.sillytavern.secrets import secrets_format
from nanogpt_companion.sillytavern.secrets_writer import SLOT_SECRETS, SlotName, SlotState, slot_state
from nanogpt_companion.sillytavern.server_config import ServerExposure, read_server_exposure
from nanogpt_companion.sillytavern.version import UNKNOWN_VERSION, STVersion, detect_st_version
from nanogpt_companion.store import Store
from nanogpt_companion.users import UserRegistry

__all__ = ["DoctorService", "FixResult"]

log = logging.getLogger(__name__)

CATALOG_WAIT = 10.0  # how long a scan waits for a cold catalogue before diagnosing without it
SYMPTOM_FIXES_KEPT = 50  # causes offered from replies that a later Fix may name, per user
PROFILES_PATH = ("extension_settings", "connectionManager", "profiles")


@dataclass
class UserState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settings_sha: str | None = None  # content last diagnosed: an identical re-save by ST changes nothing
    preset_shas: dict[str, str] = field(default_factory=dict)
    key_slots: dict[SlotName, SlotState] | None = None  # last seen; secrets.json changes re-diagnose
    findings: list[Finding] = field(default_factory=list)
    version: STVersion = UNKNOWN_VERSION
    checked_at: float | None = None
    error: ErrorInfo | None = None
    # Slot -> (the value our automatic fix replaced, the value it wrote). The replaced value back means
    # the user put it back; any third value means they moved on, and the memory ends.
    auto_fixed: dict[str, tuple[str, str]] = field(default_factory=dict)
    ppp: dict[str, Any] = field(default_factory=dict)  # what the extension may write for PPP (report "ppp")
    profile_names: dict[int, str] = field(default_factory=dict)  # for labels of profile changes
    # Causes offered for reply signatures (issue 16), by finding id, oldest first: what a Fix may name.
    symptom_fixes: dict[str, Finding] = field(default_factory=dict)


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
        providers: ProviderService | None = None,
    ) -> None:
        self._providers = providers  # None: provider rules stay silent (no provider info)
        self._offline = offline  # CLI --offline: diagnose with what is cached, never contact NanoGPT
        self._users = users
        self._bus = bus
        self._catalog = catalog
        self._account = account
        self._policies = PolicyBook(store, settings.doctor_policies)
        self._live = LiveDispatcher(bus)
        self._files = FileFixer(store)
        self._store = store  # reply-signature counts
        self._family_table = load_family_table(settings.ppp_families_file)
        self._presets = PresetReader()  # re-reads a preset only when its file changed
        self._st_dir = settings.sillytavern
        self._state: dict[str, UserState] = {}
        # Per key fingerprint: model ids a catalogue refresh saw disappear, and when.
        self._removed_models: dict[str, dict[str, float]] = {}
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
        if not is_open:
            # Live fixes that never came back belong to the file path now. They were never applied, so
            # seeing their findings again on the next scan is not the user reverting them.
            for pending in self._live.drop_all(handle):
                if state is not None:
                    state.auto_fixed.pop(slot_of(pending.finding), None)
        if handle in self._users.handles():
            self._spawn(self.check_user(handle, force=True))

    def on_catalog_refresh(self, fingerprint: str, diff: CatalogDiff) -> None:
        """A refresh changed the catalogue behind ``fingerprint``: remember what disappeared (so a model is
        reported as removed, not mistyped) and re-check every user on that catalogue at once, rather than
        waiting for their next unrelated settings change."""
        removed = self._removed_models.setdefault(fingerprint, {})
        now = time.time()
        for model_id in diff.removed:
            removed.setdefault(model_id, now)
        for model_id in diff.added:
            removed.pop(model_id, None)
        # Prices and tiers are no rule's business; a model coming or going, or its context size, is.
        if not (diff.added or diff.removed or any("context_length" in c["fields"] for c in diff.changed)):
            return
        for handle in self._users.handles():
            key = self._users.cached_key(handle)  # a user whose key was never looked up has no catalogue yet
            if key is not None and key.fingerprint == fingerprint:
                self._spawn(self.check_user(handle, force=True))

    # ---- queries ---------------------------------------------------------------------------------------

    def _user_state(self, handle: str) -> UserState:
        return self._state.setdefault(handle, UserState())

    def st_version(self, handle: str) -> STVersion:
        """The ST version the last scan of ``handle`` found (what a key-slot write must match)."""
        return self._user_state(handle).version

    async def report(self, handle: str, *, refresh: bool = False) -> dict[str, Any]:
        """Findings as the API and the CLI show them. ``refresh``: re-read NanoGPT's catalogue and the
        files first (the extension's Re-check), instead of answering from the last scan."""
        state = self._user_state(handle)
        if refresh:
            await self.recheck(handle)
        elif state.checked_at is None:
            await self.check_user(handle)
        # Under the lock: never between a fix written to the file and the scan of the fixed file.
        async with state.lock:
            findings = state.findings
        decisions = await self._decisions(handle, findings)
        shown = [(f, decisions[f.id]) for f in findings if decisions[f.id].policy != "off"]
        return {
            "findings": [self._finding_json(f, d, state) for f, d in shown],
            "muted": len(findings) - len(shown),
            # Which findings are hidden, by name only (the policy panel says which rules it keeps quiet).
            "muted_findings": [
                {"id": f.id, "rule": f.rule, "title": f.title}
                for f in findings
                if decisions[f.id].policy == "off"
            ],
            "st_version": state.version.display,
            "checked_at": state.checked_at,
            "tab_open": self._live.tab_open(handle),
            "error": state.error.model_dump() if state.error else None,
            "ppp": state.ppp or None,
        }

    async def _decisions(self, handle: str, findings: Iterable[Finding]) -> dict[str, Decision]:
        explicit = await self._policies.explicit(handle)
        declines = await self._policies.declines(handle)
        return {f.id: PolicyBook.decide(f, explicit, declines) for f in findings}

    def _finding_json(self, finding: Finding, decision: Decision, state: UserState) -> dict[str, Any]:
        data = finding.model_dump(mode="json")
        data["policy"] = decision.policy
        data["fixable"] = finding.fixable
        data["declined"] = decision.declined
        data["fix_all"] = decision.fix_all
        data["change"] = self._change_text(finding, state) if finding.patch else None
        return data

    def _change_text(self, finding: Finding, state: UserState) -> str:
        """The fix in ST's own words, e.g. ``Prompt Post-Processing: None → Merge consecutive roles``."""
        return "; ".join(
            describe_change(op.path, op.old, op.value, state.version, _where(op.path, finding.preset, state))
            for op in finding.patch
        )

    async def explicit_policies(self, handle: str) -> dict[str, Policy]:
        return await self._policies.explicit(handle)

    async def effective_policies(self, handle: str) -> dict[str, Policy]:
        return await self._policies.effective(handle)

    async def set_policy(self, handle: str, rule: str, policy: Policy) -> dict[str, Policy]:
        policies = await self._policies.set(handle, rule, policy)
        self._spawn(self.check_user(handle, force=True))
        return policies

    # ---- scanning --------------------------------------------------------------------------------------

    async def recheck(self, handle: str) -> None:
        """Re-read NanoGPT's catalogue (unless offline; a failure keeps the cached one) and the files."""
        if not self._offline:
            with contextlib.suppress(CatalogUnavailable, TimeoutError):
                key = await self._users.key_for(handle)
                await asyncio.wait_for(self._catalog.refresh(key), CATALOG_WAIT)
        await self.check_user(handle, force=True)

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
        key_slots = await self._key_slots(handle, paths)
        same_files = doc.sha256 == state.settings_sha and preset_shas == state.preset_shas
        if not force and same_files and key_slots == state.key_slots:
            return False  # identical re-save (ST saves often) or our own write: nothing new
        state.settings_sha = doc.sha256
        state.preset_shas = preset_shas
        state.key_slots = key_slots
        state.error = None
        fmt = await asyncio.to_thread(secrets_format, paths.secrets)
        state.version = detect_st_version(doc.data, fmt)
        state.profile_names = _profile_names(doc.data)
        catalogue, account, removed = await self._context_data(handle)
        provider_info, provider_names = await self._provider_data(doc.data, state.version)
        ctx = DoctorContext(
            settings=doc.data,
            st_version=state.version,
            presets=presets.data,
            catalogue=catalogue,
            account=account,
            family_table=self._family_table,
            st_server=await self._st_server(),
            removed_models=removed,
            providers=provider_info,
            provider_names=provider_names,
            key_slots=key_slots,
        )
        findings = diagnose(ctx) + presets.problems
        documents: dict[str | None, Any] = {stem: data for stem, data in presets.data.items()}
        documents[None] = doc.data
        await self._note_reverts(handle, state, documents)
        await self._policies.reconcile(handle, documents)
        state.findings = findings
        state.ppp = ppp_choices(ctx)
        state.checked_at = time.time()
        self._publish_findings(handle)
        return True

    async def _note_reverts(self, handle: str, state: UserState, documents: Mapping[str | None, Any]) -> None:
        """A setting we fixed automatically holds its old value again: the user put it back. Respect that."""
        awaiting_tab = {slot_of(fix) for fix in self._live.pending(handle)}
        for slot, (replaced, wrote) in list(state.auto_fixed.items()):
            # A live fix the tab has not applied yet is still expected to be seen (ST may save other
            # changes first); only the old value back after the fix took effect is the user's choice.
            if slot in awaiting_tab:
                continue
            now = value_in(slot, documents)
            if now == wrote:
                continue  # the fix holds
            del state.auto_fixed[slot]
            if now == replaced:
                await self._policies.decline(handle, slot, replaced, wrote)
                log.info("user %s put back a value the doctor had fixed; keeping it as a suggestion", handle)

    async def _st_server(self) -> ServerExposure | None:
        """ST's own server settings, for ``st.exposed`` (needs the ST folder, not just a data root)."""
        if self._st_dir is None:
            return None
        return await asyncio.to_thread(read_server_exposure, self._st_dir, self._users.data_root)

    async def _context_data(
        self, handle: str
    ) -> tuple[Mapping[str, CatalogEntry] | None, AccountSnapshot | None, Mapping[str, float]]:
        key = await self._users.key_for(handle)
        removed = self._removed_models.get(key.fingerprint, {})
        if self._offline:
            stored = await self._catalog.stored(key)
            return (stored.by_id if stored is not None else None), None, removed
        snapshot = self._catalog.cached(key)
        if snapshot is None:
            with contextlib.suppress(CatalogUnavailable, TimeoutError):
                snapshot = (await asyncio.wait_for(self._catalog.get(key), CATALOG_WAIT)).snapshot
        account = self._account.cached(handle)
        return (snapshot.by_id if snapshot is not None else None), account, removed

    async def _key_slots(self, handle: str, paths: UserPaths) -> dict[SlotName, SlotState] | None:
        """What each key slot holds compared with the user's key, when that key is ST's (a key from the
        service's configuration says nothing about the user's slots)."""
        key = await self._users.key_for(handle)
        value = key.reveal()
        if key.source != "sillytavern" or not value:
            return None

        def read() -> dict[SlotName, SlotState]:
            return {slot: slot_state(paths.secrets, slot, value) for slot in SLOT_SECRETS}

        return await asyncio.to_thread(read)

    async def _provider_data(
        self, settings: Any, version: STVersion
    ) -> tuple[dict[str, ModelProviders], dict[str, str]]:
        """NanoGPT's provider info for the selected model, only when a provider is chosen on an ST that has
        provider selection (one request per model in use, cached and shared; never per catalogue row)."""
        if self._providers is None or self._offline or not version.nanogpt_provider:
            return {}, {}
        model = chosen_provider_model(settings)
        if model is None:
            return {}, {}
        names = await self._providers.names()
        lookup = providers_lookup_id(model, names)
        try:
            info, _stale = await asyncio.wait_for(self._providers.for_model(lookup), CATALOG_WAIT)
        except (NanoGPTError, TimeoutError) as exc:
            log.info("provider info for %s unavailable: %s", lookup, exc)
            return {}, names
        return {lookup: info}, names

    def _publish_findings(self, handle: str) -> None:
        async def publish() -> None:
            self._bus.publish(handle, "findings", await self.report(handle))

        self._spawn(publish())

    # ---- fixing ----------------------------------------------------------------------------------------

    async def _act_on_auto(self, handle: str, paths: UserPaths, state: UserState) -> None:
        decisions = await self._decisions(handle, state.findings)
        auto = [f for f in state.findings if decisions[f.id].policy == "auto"]
        if not auto:
            return
        results = await self._apply_locked(handle, paths, state, auto, automatic=True)
        for result in results:
            log.info("auto fix %s for %s: %s", result.id, handle, result.status)

    async def apply(self, handle: str, ids: Sequence[str] | None) -> list[FixResult]:
        """Apply findings by id, or (``None``) "Fix all": the problems, not the preferences.

        By id works for ``ask`` findings too and ends a decline (the user asked for it); a rule set to
        ``off`` is refused. "Fix all" takes only what ``Decision.fix_all`` allows.
        """
        user = self._users.get(handle)
        if user is None or user.paths is None:
            return [FixResult(i, "not_found", "This user has no SillyTavern files.") for i in ids or ()]
        state = self._user_state(handle)
        async with state.lock:
            await self._scan(handle, user.paths, state, force=False)
            decisions = await self._decisions(handle, state.findings)
            if ids is None:
                wanted = [f for f in state.findings if decisions[f.id].fix_all]
                return await self._apply_locked(handle, user.paths, state, wanted, automatic=False)
            by_id = {f.id: f for f in state.findings}
            refused: list[FixResult] = []
            wanted = []
            for finding_id in ids:
                finding = by_id.get(finding_id)
                if finding is None:
                    refused.append(FixResult(finding_id, "not_found", "That finding no longer applies."))
                elif decisions[finding_id].policy == "off":
                    refused.append(
                        FixResult(
                            finding_id,
                            "declined",
                            f'The rule "{finding.rule}" is turned off; set it to ask or auto to use it.',
                        )
                    )
                else:
                    if decisions[finding_id].declined:
                        await self._policies.clear(handle, finding)
                    wanted.append(finding)
            return refused + await self._apply_locked(handle, user.paths, state, wanted, automatic=False)

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
            result = await self._route(handle, paths, state, finding)
            wrote_file = wrote_file or result.status == "applied"
            if automatic and result.status in ("applied", "sent_live"):
                state.auto_fixed[slot_of(finding)] = (kept_value(finding), written_value(finding))
            results.append(result)
        if wrote_file:
            # Findings reflect the fixed file; no new round of automatic fixes.
            await self._scan(handle, paths, state, force=True)
        return results

    async def _route(
        self, handle: str, paths: UserPaths, state: UserState, finding: Finding, *, undo_of: int | None = None
    ) -> FixResult:
        """The one place that picks the path: the open tab for settings, else the file."""
        change = self._change_text(finding, state)
        if finding.target == "settings" and self._live.tab_open(handle):
            return self._live.send(handle, finding, change, undo_of=undo_of)
        result = await self._files.apply(handle, paths, finding)
        # The Fix button's answer names the change as ST labels it, as the live path's toast does.
        return (
            replace(result, message=f"{result.message}: {change}") if result.status == "applied" else result
        )

    async def acknowledge(self, handle: str, fix_id: str, status: str, message: str) -> list[int] | None:
        """The tab reports a live fix back. Journal it so it can be undone like a file fix.

        Returns the journal ids written (empty for a failure or an undo), or None for an unknown fix.
        """
        pending = self._live.take(handle, fix_id)
        if pending is None:
            return None
        if status != "applied":
            self._user_state(handle).auto_fixed.pop(slot_of(pending.finding), None)
            log.warning("live fix %s failed in the tab: %s", pending.finding.rule, message[:200])
            return []
        if pending.undo_of is not None:
            await self._files.mark_undone(pending.undo_of)
            return []
        return await self._files.journal(handle, pending.finding, "live")

    # ---- reply signatures (the formatting doctor that reads the chat) ----------------------------------

    async def signature(
        self, handle: str, signature: str, evidence: str, involved: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A reply in the user's tab showed ``signature``: count it and say which settings cause it here.

        The causes are read from the user's settings with the tab's current values of the ``involved``
        settings on top (the tab saves a second after a change); each fixable one can then be applied by
        id through ``apply_symptom_fix``, down the same path as every other fix.
        """
        user = self._users.get(handle)
        count = await self._store.count_signature(handle, signature)
        if user is None or user.paths is None:
            return {"signature": signature, "causes": [], "seen": count}
        state = self._user_state(handle)
        if state.checked_at is None:
            await self.check_user(handle)
        try:
            doc = await asyncio.to_thread(read_document, user.paths.settings)
        except (DocumentMissing, DocumentUnreadable):
            return {"signature": signature, "causes": [], "seen": count}
        settings = with_tab_settings(doc.data, dict(involved))
        catalogue, account, removed = await self._context_data(handle)
        ctx = DoctorContext(
            settings=settings,
            st_version=state.version,
            catalogue=catalogue,
            account=account,
            family_table=self._family_table,
            removed_models=removed,
        )
        found = symptom_causes(signature, ctx, evidence)
        for finding in found:
            state.symptom_fixes.pop(finding.id, None)
            state.symptom_fixes[finding.id] = finding
        while len(state.symptom_fixes) > SYMPTOM_FIXES_KEPT:
            del state.symptom_fixes[next(iter(state.symptom_fixes))]
        causes = []
        for finding in found:
            data = finding.model_dump(mode="json")
            data["fixable"] = finding.fixable
            data["change"] = self._change_text(finding, state) if finding.patch else None
            causes.append(data)
        log.info("reply signature %s for %s (%d causes, seen %d times)", signature, handle, len(found), count)
        return {"signature": signature, "causes": causes, "seen": count}

    async def apply_symptom_fix(self, handle: str, finding_id: str) -> FixResult:
        """Apply a cause offered by ``signature``: to the open tab (journalled on its ack), else the file."""
        user = self._users.get(handle)
        state = self._user_state(handle)
        finding = state.symptom_fixes.get(finding_id)
        if user is None or user.paths is None or finding is None:
            return FixResult(
                finding_id, "not_found", "That suggestion is no longer available; check the reply again."
            )
        if not finding.fixable:
            return FixResult(finding_id, "failed", "This suggestion is advice only; nothing to apply.")
        async with state.lock:
            result = await self._route(handle, user.paths, state, finding)
            if result.status == "applied":
                await self._scan(handle, user.paths, state, force=True)
        return result

    async def signature_counts(self, handle: str) -> dict[str, int]:
        return await self._store.signature_counts(handle)

    async def journal(self, handle: str, limit: int = 50) -> list[dict[str, Any]]:
        """Recent fixes for this user, newest first, with what undo would put back."""
        state = self._user_state(handle)
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
                "change": describe_change(
                    e.key_path,
                    e.old_value,
                    e.new_value,
                    state.version,
                    _where(e.key_path, _preset(e.file), state),
                ),
            }
            for e in await self._files.entries(handle, limit)
        ]

    async def undo(self, handle: str, journal_id: int) -> FixResult:
        entry = await self._files.entry(journal_id)
        if entry is None or entry.user != handle:
            return FixResult(str(journal_id), "not_found", "No such fix in your journal.")
        if entry.undone_at is not None:
            return FixResult(str(journal_id), "conflict", "That fix was already undone.")
        user = self._users.get(handle)
        if user is None or user.paths is None:
            return FixResult(str(journal_id), "not_found", "This user has no SillyTavern files.")
        state = self._user_state(handle)
        reverse = reverse_of(entry)
        # Undoing is an explicit "no": the old value stays, and the fix is only offered from now on.
        slot = slot_of(reverse)
        await self._policies.decline(
            handle, slot, orjson.dumps([entry.old_value]).decode(), orjson.dumps([entry.new_value]).decode()
        )
        state.auto_fixed.pop(slot, None)
        async with state.lock:
            if reverse.target == "settings" and self._live.tab_open(handle):
                result = await self._route(handle, user.paths, state, reverse, undo_of=journal_id)
                return FixResult(str(journal_id), result.status, result.message, journal_id)
            result = await self._files.revert(user.paths, entry)
            if result.status == "applied":
                await self._scan(handle, user.paths, state, force=True)
                # Named as ST labels it ("Prompt Post-Processing: Merge consecutive roles → None").
                result = replace(result, message=self._change_text(reverse, state))
        return result


def _profile_names(settings: Mapping[str, Any]) -> dict[int, str]:
    node: Any = settings
    for key in PROFILES_PATH:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, list):
        return {}
    return {
        index: str(profile.get("name") or f"#{index + 1}")
        for index, profile in enumerate(node)
        if isinstance(profile, Mapping)
    }


def _preset(file_label: str) -> str | None:
    return file_label.split(":", 1)[1] if file_label.startswith("preset:") else None


def _where(path: Sequence[str | int], preset: str | None, state: UserState) -> str | None:
    """Which preset or connection profile a change is in, for its label (None: the live settings)."""
    if preset is not None:
        return f'preset "{preset}"'
    if tuple(path[: len(PROFILES_PATH)]) == PROFILES_PATH and len(path) > len(PROFILES_PATH):
        index = path[len(PROFILES_PATH)]
        name = state.profile_names.get(index) if isinstance(index, int) else None
        return f'connection profile "{name}"' if name else "a connection profile"
    return None
