// Settings doctor panel: findings with explanations, Fix / Fix all / Undo, live `fix` events applied
// through ST's own handlers and acknowledged, and suggestions when a generation failed with a known
// message-ordering error. Which values may be written, and how ST names them, comes from the service
// (the report's `ppp` table and each finding's `change`): this file keeps no copy of ST's version facts.

import { escapeHtml, matchFormattingError } from './format.js';
import { describeChange } from './st-labels.js';

const PPP_PATH = ['oai_settings', 'custom_prompt_post_processing'];
/** How many not-yet-undone fixes the "Recent fixes" list offers; older ones stay in the service's journal. */
const RECENT_LIMIT = 5;

export class DoctorView {
    constructor({ root, adapter, client, onChange, onMuted }) {
        this.root = root;
        this.onMuted = onMuted ?? (() => {});
        this.adapter = adapter;
        this.client = client;
        this.onChange = onChange ?? (() => {});
        this.t = (s) => adapter.t(s);
        this.findings = [];
        this.ppp = null; // the service's {values, labels, choices, applies} for this user's ST
        this.suggestion = null;
        this.undoStack = [];
        this.recent = [];
        this.list = root.querySelector('#ngc_findings');
        this.recentBox = root.querySelector('#ngc_recent');
        this.recentList = root.querySelector('#ngc_recent_fixes');
        this.recentList?.addEventListener('click', (ev) => {
            const btn = ev.target.closest?.('button[data-undo]');
            if (btn) this.undoJournal([Number(btn.dataset.undo)], btn);
        });
        this.undoBtn = root.querySelector('#ngc_undo');
        this.list.addEventListener('click', (ev) => {
            const keyBtn = ev.target.closest?.('button[data-key-slots]');
            if (keyBtn) return void this.installKey(keyBtn.dataset.keySlots.split(','), keyBtn);
            const pickBtn = ev.target.closest?.('button[data-pick-provider]');
            if (pickBtn) return void this.pickProvider(pickBtn);
            const btn = ev.target.closest?.('button[data-fix]');
            if (!btn) return;
            if (btn.dataset.fix === '__suggestion__') this.applySuggestion();
            else this.fix({ ids: [btn.dataset.fix] });
        });
        root.querySelector('#ngc_fix_all').addEventListener('click', () => this.fix({ all: true }));
        this.undoBtn.addEventListener('click', () => this.undo());
        root.querySelector('#ngc_recheck').addEventListener('click', () => this.refresh({ recheck: true }));
    }

    /** `recheck`: the service re-reads NanoGPT's model list and ST's files before answering. */
    async refresh({ recheck = false } = {}) {
        try {
            const data = await this.client.call(recheck ? '/api/doctor?refresh=1' : '/api/doctor');
            this.set(data.findings ?? [], data);
        } catch (err) {
            console.debug('[NanoGPT Companion] doctor refresh failed', err?.code);
        }
        await this.loadJournal();
    }

    /**
     * The service's fix journal is the only place that knows about fixes it wrote to the file while no
     * tab was open, so "Recent fixes" comes from there rather than from this tab's own memory.
     */
    async loadJournal() {
        let data;
        try {
            data = await this.client.call(`/api/doctor/journal?limit=${RECENT_LIMIT * 4}`);
        } catch (err) {
            console.debug('[NanoGPT Companion] journal load failed', err?.code);
            return;
        }
        const open = (data?.entries ?? []).filter((e) => e.undone_at === null || e.undone_at === undefined);
        this.recent = open.slice(0, RECENT_LIMIT);
        // Session undo entries whose journal rows were undone elsewhere (the list, another tab) are spent.
        const live = new Set(open.map((e) => e.journal_id));
        this.undoStack = this.undoStack.filter((u) => u.kind !== 'journal' || u.journal_ids.some((id) => live.has(id)));
        // Only the parts the journal feeds: re-rendering the findings would swap buttons under the pointer.
        this.undoBtn.disabled = this.undoStack.length === 0;
        this.renderRecent();
    }

    renderRecent() {
        if (!this.recentList) return;
        this.recentBox.hidden = this.recent.length === 0;
        const show = (v) => (v === null || v === undefined || v === '' ? this.t('(empty)') : JSON.stringify(v));
        this.recentList.innerHTML = this.recent.map((e) => {
            const where = e.mode === 'file' ? this.t('written to the file while SillyTavern was closed') : this.t('applied in SillyTavern');
            const when = e.created_at ? new Date(e.created_at * 1000).toLocaleString() : '';
            // The service words each change as ST labels it (`change`); otherwise ST's own labels from here.
            const change = e.change ?? (e.path?.length ? describeChange(e.path, e.old_value, e.new_value) : `${e.rule}: ${show(e.old_value)} → ${show(e.new_value)}`);
            return `<li class="ngc-finding ngc-recent" data-journal="${escapeHtml(e.journal_id)}" data-mode="${escapeHtml(e.mode)}">
                <div class="ngc-finding-head">${escapeHtml(change)}</div>
                <div class="ngc-small ngc-muted">${escapeHtml(where)}${when ? ` · ${escapeHtml(when)}` : ''}</div>
                <button type="button" class="menu_button ngc-small-btn" data-undo="${escapeHtml(e.journal_id)}" aria-label="${escapeHtml(this.t('Undo'))}: ${escapeHtml(change)}">${escapeHtml(this.t('Undo'))}</button>
            </li>`;
        }).join('');
    }

    /** Findings plus, when given, the rest of the report (the `ppp` table rides along with every scan).
     * Findings of rules set to "off" are not listed; how many were left out is said instead. */
    set(findings, report = null) {
        const all = findings ?? [];
        this.findings = all.filter((f) => f.policy !== 'off');
        // The service leaves findings of "off" rules out of the list and names them in `muted_findings`.
        const muted = all.filter((f) => f.policy === 'off');
        this.onMuted(muted.length ? muted : (report?.muted_findings ?? []));
        if (report && 'ppp' in report) this.ppp = report.ppp ?? null;
        this.render();
    }

    render() {
        const items = this.findings.map((f) => `<li class="ngc-finding" data-severity="${escapeHtml(f.severity)}" data-id="${escapeHtml(f.id)}">
            <div class="ngc-finding-head"><span class="ngc-sev">${escapeHtml(this.t(f.severity))}</span> <strong>${escapeHtml(f.title)}</strong></div>
            <div class="ngc-small">${escapeHtml(f.explanation)}</div>
            ${f.change ? `<div class="ngc-small ngc-change">${escapeHtml(f.change)}${f.raises_cost ? ` · ${escapeHtml(this.t('costs more per message'))}` : ''}</div>` : ''}
            ${this.providerPickerHtml(f)}
            ${f.patch?.length ? `<button type="button" class="menu_button ngc-small-btn" data-fix="${escapeHtml(f.id)}" aria-label="${escapeHtml(this.t('Fix'))}: ${escapeHtml(f.title)}">${escapeHtml(f.rule === 'provider.choice' ? this.t('Clear the choice (Auto)') : this.t('Fix'))}</button>` : ''}
            ${f.details?.action?.kind === 'install_key' ? `<button type="button" class="menu_button ngc-small-btn" data-key-slots="${escapeHtml(f.details.action.slots.join(','))}">${escapeHtml(this.t('Put my NanoGPT key there'))}</button>` : ''}
        </li>`);
        if (this.suggestion) {
            const s = this.suggestion;
            const head = s.ppp
                ? `${escapeHtml(this.t('Set Prompt Post-Processing to'))} "${escapeHtml(s.label)}"`
                : escapeHtml(this.t('Prompt Post-Processing cannot fix this here'));
            items.unshift(`<li class="ngc-finding ngc-suggestion" data-severity="warning" data-id="__suggestion__">
                <div class="ngc-finding-head"><span class="ngc-sev">${escapeHtml(this.t('generation failed'))}</span>
                <strong>${head}</strong></div>
                <div class="ngc-small">${escapeHtml(s.reason)}</div>
                ${s.ppp ? `<button type="button" class="menu_button ngc-small-btn" data-fix="__suggestion__">${escapeHtml(this.t('Fix'))}</button>` : ''}</li>`);
        }
        this.list.innerHTML = items.join('') || `<li class="ngc-muted ngc-small">${escapeHtml(this.t('No problems found.'))}</li>`;
        // "Fix all" takes what the service puts in it: problems, never cost-raising or declined suggestions.
        this.root.querySelector('#ngc_fix_all').disabled = !this.findings.some((f) => f.fix_all);
        this.undoBtn.disabled = this.undoStack.length === 0;
        this.renderRecent();
    }

    /**
     * provider.choice: the providers NanoGPT has available for the model, limited to those this ST's own
     * provider list offers (ST 1.18.0 hard-codes it; a provider it does not list cannot be chosen there).
     */
    providerPickerHtml(f) {
        if (f.rule !== 'provider.choice') return '';
        const choices = (f.details?.choices ?? []).filter((c) => this.adapter.hasProviderOption(c.id));
        if (!choices.length) return '';
        const opts = choices.map((c) => `<option value="${escapeHtml(c.id)}">${escapeHtml(c.label)}</option>`).join('');
        return `<label class="ngc-small">${escapeHtml(this.t('Available providers'))}
            <select class="text_pole ngc-provider-pick" data-provider-for="${escapeHtml(f.id)}">${opts}</select></label>
            <button type="button" class="menu_button ngc-small-btn" data-pick-provider="${escapeHtml(f.id)}">${escapeHtml(this.t('Use this provider'))}</button>`;
    }

    /** Choose an available provider through ST's own select (so ST saves it and updates its warning). */
    pickProvider(btn) {
        const finding = this.findings.find((f) => f.id === btn.dataset.pickProvider);
        const select = this.list.querySelector(`select[data-provider-for="${CSS.escape(btn.dataset.pickProvider)}"]`);
        if (!finding || !select) return;
        const op = { path: ['oai_settings', 'nanogpt_provider'], value: select.value, old: finding.details?.provider ?? null };
        const r = this.adapter.applyPatchOp(op);
        if (r.ok) {
            this.undoStack.push({ kind: 'live', ops: [op], title: `${this.t('Provider')} ${select.value}` });
            this.adapter.toast('info', this.describeOps([op]));
        } else {
            this.adapter.toast('warning', r.message);
        }
        this.render();
        this.onChange();
    }

    /**
     * One action, every slot: the service copies the user's NanoGPT key into each slot (never through this
     * page), then ST's own secret state is reloaded so its page (and Image Generation) sees the key.
     */
    async installKey(slots, btn) {
        btn.disabled = true;
        let data;
        try {
            data = await this.client.call('/api/connection/key/all', { method: 'POST', body: { slots } });
        } catch (err) {
            btn.disabled = false;
            this.adapter.toast('error', err.message);
            return [];
        }
        const results = data.results ?? [];
        const written = results.filter((r) => r.status === 'written');
        for (const r of written) await this.adapter.reloadSecretState(r.secret);
        if (written.some((r) => r.secret === 'api_key_nanogpt')) await this.adapter.reloadImageModels();
        if (written.length) this.undoStack.push({ kind: 'keys', write_ids: written.map((r) => r.write_id), secrets: written.map((r) => r.secret), title: this.t('NanoGPT key copied') });
        for (const r of results) {
            this.adapter.toast(r.status === 'refused' ? 'warning' : 'success', r.message);
        }
        this.onChange();
        await this.refresh();
        return results;
    }

    async fix(body) {
        let data;
        try {
            data = await this.client.call('/api/doctor/fix', { method: 'POST', body });
        } catch (err) {
            this.adapter.toast('error', `${this.t('Fix failed')}: ${err.message}`);
            return [];
        }
        const results = data.results ?? [];
        for (const r of results) {
            if (r.status === 'applied' && r.journal_id !== null && r.journal_id !== undefined) {
                this.undoStack.push({ kind: 'journal', journal_ids: [r.journal_id], title: r.message });
            } else if (r.status === 'conflict' || r.status === 'failed' || r.status === 'declined') {
                this.adapter.toast('warning', r.message || `${this.t('Fix not applied')}: ${r.id}`);
            }
        }
        this.render();
        await this.refresh();
        return results;
    }

    /**
     * A `fix` event: apply every op through ST's handlers, then tell the service how it went. Ops are
     * applied in order and rolled back if a later one fails, so ST never keeps half a fix.
     */
    async applyLiveFix(fix) {
        const done = [];
        let failure = null;
        if (fix.target === 'preset' && fix.preset && this.adapter.chatSettings()?.preset_settings_openai !== fix.preset) {
            failure = `${this.t('preset is not active')}: ${fix.preset}`;
        } else {
            for (const op of fix.patch ?? []) {
                const r = this.adapter.applyPatchOp(op);
                if (!r.ok) {
                    failure = r.message;
                    break;
                }
                done.push(op);
            }
            if (failure) for (const op of done.reverse()) this.adapter.applyPatchOp({ path: op.path, value: op.old, old: op.value });
        }
        const status = failure ? 'failed' : 'applied';
        const entry = { kind: 'live', ops: fix.patch ?? [], title: fix.change ?? fix.title };
        if (!failure) this.undoStack.push(entry);
        let isUndo = fix.undo_of !== undefined && fix.undo_of !== null;
        try {
            const r = await this.client.call('/api/doctor/ack', { method: 'POST', body: { fix_id: fix.fix_id, status, message: failure ?? 'applied through SillyTavern\'s controls' } });
            // When the service journals the live fix and says where, undo goes through it, so it also
            // learns the user declined this fix and will not re-apply it.
            const ids = r?.journal_ids ?? (r?.journal_id !== undefined && r?.journal_id !== null ? [r.journal_id] : []);
            if (!failure && ids.length) Object.assign(entry, { kind: 'journal', journal_ids: ids });
            // An applied live fix is always journalled; an empty list means this event was the service
            // carrying out an Undo, which must not itself become something to undo.
            if (!failure && Array.isArray(r?.journal_ids) && r.journal_ids.length === 0) isUndo = true;
        } catch (err) {
            console.debug('[NanoGPT Companion] ack failed', err?.code);
        }
        if (!failure) {
            if (isUndo) this.undoStack = this.undoStack.filter((u) => u !== entry);
            this.adapter.toast('info', `${isUndo ? this.t('Undone') : this.t('Fixed')}: ${fix.change ?? (isUndo ? this.describeOps(fix.patch) : fix.title)}`);
        }
        this.render();
        this.onChange();
        await this.loadJournal();
        return { status, message: failure, undo: isUndo };
    }

    /** "Prompt Post-Processing: Merge consecutive roles → None", in ST's own words. */
    describeOps(ops) {
        return (ops ?? []).map((op) => describeChange(op.path ?? [], op.old, op.value)).join('; ');
    }

    /**
     * Undo through the service: it reverts the file itself when no tab is open, or (this tab is open)
     * sends the reverse as a live `fix` event that applyLiveFix carries out through ST's controls.
     */
    async undoJournal(ids, btn = null) {
        if (btn) btn.disabled = true;
        let r = null;
        try {
            for (const id of ids) {
                r = await this.client.call('/api/doctor/undo', { method: 'POST', body: { journal_id: id } });
                if (r?.status === 'conflict' || r?.status === 'not_found' || r?.status === 'failed') break;
            }
        } catch (err) {
            if (btn) btn.disabled = false;
            this.adapter.toast('warning', `${this.t('Undo failed')}: ${err.message}`);
            return { ok: false, unreachable: true, message: err.message };
        }
        const ok = r?.status === 'reverted' || r?.status === 'sent_live';
        // "sent_live" is announced by applyLiveFix once ST really changed; only a file revert is final here.
        if (r?.status === 'reverted') this.adapter.toast('info', `${this.t('Undone')}: ${r.message ?? ''}`.trim());
        else if (!ok) this.adapter.toast('warning', r?.message || this.t('Undo failed'));
        await this.loadJournal();
        return { ok, message: r?.message ?? r?.status };
    }

    async undo() {
        const last = this.undoStack.pop();
        if (!last) return 'nothing to undo';
        let msg;
        if (last.kind === 'keys') {
            try {
                for (const id of last.write_ids) await this.client.call('/api/connection/key/undo', { method: 'POST', body: { write_id: id } });
                for (const secret of last.secrets) await this.adapter.reloadSecretState(secret);
                msg = `${this.t('Undone')}: ${last.title}`;
            } catch (err) {
                this.undoStack.push(last);
                msg = `${this.t('Undo failed')}: ${err.message}`;
            }
        } else if (last.kind === 'live') {
            for (const op of last.ops.slice().reverse()) {
                const old = op.existed === false ? null : op.old;
                this.adapter.applyPatchOp({ path: op.path, value: old ?? '', old: op.value });
            }
            msg = `${this.t('Undone')}: ${last.title}`;
        } else {
            const r = await this.undoJournal(last.journal_ids ?? [last.journal_id]);
            // Only a call that never reached the service is worth retrying; a refusal is final.
            if (r.unreachable) this.undoStack.push(last);
            this.render();
            this.onChange();
            return r.message;
        }
        this.adapter.toast('info', msg);
        this.render();
        this.onChange();
        return msg;
    }

    /**
     * A failed generation's error text; suggest (never auto-apply) the PPP mode that fixes it. The value comes
     * from the service's table for this user's ST and connection (`ppp.choices`), the same version gate the
     * doctor's own fixes pass: a mode this ST does not know, or a source it ignores PPP for, gets no Fix button.
     */
    onGenerationError(text) {
        const m = matchFormattingError(text);
        if (!m) return false;
        const ppp = this.ppp?.choices?.[m.ppp] ?? null;
        const label = ppp ? (this.ppp?.labels?.[ppp] ?? ppp) : null;
        let reason = m.reason;
        if (!ppp) {
            reason += this.ppp?.applies === false
                ? ` ${this.t('This SillyTavern version does not apply Prompt Post-Processing to this connection; update SillyTavern or use the Custom source.')}`
                : ` ${this.t('Your SillyTavern version (or this connection) has no Prompt Post-Processing mode for this; the Settings doctor explains your options.')}`;
        }
        const related = this.findings.find((f) => f.patch?.some((op) => op.path?.join('.') === PPP_PATH.join('.')));
        this.suggestion = related ? null : { ppp, label, reason };
        this.render();
        this.adapter.toast('warning', `${m.reason} ${this.t('NanoGPT Companion can fix this: see its Settings doctor.')}`);
        return true;
    }

    applySuggestion() {
        if (!this.suggestion?.ppp) return;
        const old = this.adapter.readPath(PPP_PATH);
        const op = { path: PPP_PATH, value: this.suggestion.ppp, old };
        const r = this.adapter.applyPatchOp(op);
        const oldLabel = this.ppp?.labels?.[old ?? ''] ?? old;
        if (r.ok) this.undoStack.push({ kind: 'live', ops: [op], title: `Prompt Post-Processing: ${oldLabel} → ${this.suggestion.label}` });
        this.suggestion = null;
        this.render();
        this.onChange();
    }
}
