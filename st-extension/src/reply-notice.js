// The formatting doctor in the chat (issue 16): after each NanoGPT reply, the pure engine
// (reply-signatures.js) looks for a clear signature; the service says which setting causes it for this
// user's connection and ST version; a small notice under the message offers the fix ("Fix" / "Not this").
// The fix is the doctor's own: the service sends it back as a live `fix` event, DoctorView applies it
// through ST's controls and the service journals it, so it can be undone like any other fix.
// Privacy: only the signature's name, a fixed evidence label, the message's index and the involved
// settings leave the browser; message text never does.

import { escapeHtml, isNanoGptUrl, matchFormattingError } from './format.js';
import { detectReplySignatures, dismissalKey, SIGNATURES } from './reply-signatures.js';

const DISMISSED_KEPT = 500; // "Not this" memories kept in extension settings, newest last
const ELEMENT_WAIT_MS = 5000; // ST renders a non-streamed reply right after MESSAGE_RECEIVED

export class ReplyNotices {
    constructor({ adapter, client, store, settings, saveSettings, undoJournal }) {
        this.adapter = adapter;
        this.undoJournal = undoJournal; // DoctorView's: through the service, which learns the user said no
        this.client = client;
        this.store = store; // the catalogue: which models reason
        this.settings = settings;
        this.saveSettings = saveSettings;
        this.t = (s) => adapter.t(s);
        this.pending = new Map(); // cause id -> {mesId, box, regenerate}
        this.checked = 0; // replies examined (a witness for "no notice" tests)
    }

    attach() {
        const ok = this.adapter.on('MESSAGE_RECEIVED', (id, type) => this.onMessage(id, type));
        if (!ok) console.info('[NanoGPT Companion] this SillyTavern has no message-received event; the formatting doctor in the chat is off.');
        return ok;
    }

    /** The NanoGPT connection in use, or null: only NanoGPT replies are the doctor's business. */
    connection() {
        const src = this.adapter.activeSource();
        if (src.mainApi === 'openai') {
            if (src.source === 'nanogpt' || (src.source === 'custom' && isNanoGptUrl(src.customUrl))) return { kind: 'chat', src };
            return null;
        }
        const text = this.adapter.textSettings();
        if (src.mainApi === 'textgenerationwebui' && text?.type === 'generic' && isNanoGptUrl(text?.server_urls?.generic ?? '')) {
            return { kind: 'text', src };
        }
        return null;
    }

    /** The settings that decide every signature, as the tab has them now (never message text). */
    involved(conn) {
        const s = this.adapter.chatSettings() ?? {};
        const power = this.adapter.ctx()?.powerUserSettings;
        const out = { main_api: conn.src.mainApi };
        if (conn.kind === 'chat') {
            Object.assign(out, {
                chat_completion_source: s.chat_completion_source ?? null,
                custom_url: s.chat_completion_source === 'custom' ? s.custom_url ?? null : null,
                custom_model: s.custom_model ?? null,
                nanogpt_model: s.nanogpt_model ?? null,
                custom_prompt_post_processing: s.custom_prompt_post_processing ?? '',
                show_thoughts: s.show_thoughts ?? null,
                function_calling: s.function_calling ?? null,
                openai_max_tokens: Number.isFinite(Number(s.openai_max_tokens)) ? Number(s.openai_max_tokens) : null,
            });
        }
        if (typeof power?.reasoning?.auto_parse === 'boolean') out.auto_parse = power.reasoning.auto_parse;
        return out;
    }

    chatId() {
        const ctx = this.adapter.ctx();
        try {
            return ctx?.getCurrentChatId?.() ?? ctx?.chatId ?? '';
        } catch {
            return '';
        }
    }

    async context(conn, chat, id, message) {
        const ctx = this.adapter.ctx();
        let lastUserText = '';
        for (let i = id - 1; i >= 0; i--) {
            if (chat[i]?.is_user) {
                lastUserText = chat[i].mes ?? '';
                break;
            }
        }
        const s = this.adapter.chatSettings() ?? {};
        let tokenCount = message.extra?.token_count;
        const maxTokens = conn.kind === 'chat' ? Number(s.openai_max_tokens) : NaN;
        if (!Number.isFinite(tokenCount) && Number.isFinite(maxTokens) && typeof ctx?.getTokenCountAsync === 'function' && message.mes) {
            try {
                tokenCount = await ctx.getTokenCountAsync(message.mes, 0);
            } catch {
                tokenCount = null;
            }
        }
        const model = this.adapter.currentModel();
        const expectReasoning = conn.kind === 'chat' && s.show_thoughts === true && this.store?.byId?.get(model)?.capabilities?.reasoning === true;
        return { userName: ctx?.name1 ?? '', lastUserText, tokenCount, maxTokens, expectReasoning };
    }

    async onMessage(id, type) {
        if (type === 'first_message' || this.settings().reply_doctor === false) return;
        const ctx = this.adapter.ctx();
        const chat = ctx?.chat;
        const message = Array.isArray(chat) ? chat[Number(id)] : null;
        if (!message || message.is_user || message.is_system) return;
        const conn = this.connection();
        if (!conn) return;
        try {
            const found = detectReplySignatures({ text: message.mes ?? '', reasoning: message.extra?.reasoning ?? '' }, await this.context(conn, chat, Number(id), message));
            this.removeNotice(Number(id));
            for (const sig of found) {
                if (await this.report(Number(id), sig.name, sig.evidence, conn)) break; // one notice per message
            }
        } finally {
            this.checked += 1; // counted once the reply is fully handled, notice or not
        }
    }

    /**
     * A failed generation's role-order error: no message to attach to, so the notice goes into the chat's end.
     * True when that is answered here (a notice, or one the user dismissed); false leaves it to the drawer.
     */
    async onGenerationError(text) {
        const m = matchFormattingError(text);
        const conn = this.connection();
        if (!m || !conn || conn.kind !== 'chat' || this.settings().reply_doctor === false) return false;
        // "Not this" for this chat and these settings: answered, and no other part of us brings it up again.
        if (this.isDismissed(this.dismissal(SIGNATURES.ROLE_ERROR, conn).key)) return true;
        return this.report(null, SIGNATURES.ROLE_ERROR, m.ppp, conn);
    }

    /** What "Not this" is remembered by: this chat, the signature and the involved settings' values now. */
    dismissal(signature, conn) {
        const involved = this.involved(conn);
        return { involved, key: dismissalKey(this.chatId(), signature, involved) };
    }

    isDismissed(key) {
        return (this.settings().dismissed_signatures ?? []).includes(key);
    }

    async report(mesId, signature, evidence, conn) {
        const { involved, key } = this.dismissal(signature, conn);
        if (this.isDismissed(key)) return false;
        let data;
        try {
            data = await this.client.call('/api/doctor/signature', { method: 'POST', body: { signature, evidence, message_id: mesId, settings: involved } });
        } catch (err) {
            console.debug('[NanoGPT Companion] signature report failed', err?.code);
            return false;
        }
        const cause = (data?.causes ?? [])[0];
        if (!cause) return false; // no setting explains it here: say nothing rather than guess
        const host = await this.hostFor(mesId);
        if (!host) return false;
        this.removeNotice(mesId); // ST may show one error in several toasts: one notice is enough
        this.render(host, { mesId, signature, key, cause, others: (data.causes ?? []).slice(1) });
        return true;
    }

    async hostFor(mesId) {
        const d = this.adapter.win.document;
        const find = () => (mesId === null ? d.getElementById('chat') : d.querySelector(`#chat .mes[mesid="${mesId}"] .mes_block`));
        if (!find()) await this.adapter.waitFor(() => !!find(), ELEMENT_WAIT_MS);
        return find();
    }

    removeNotice(mesId) {
        this.adapter.win.document.querySelectorAll(`.ngc-reply-notice[data-mesid="${mesId}"]`).forEach((el) => el.remove());
    }

    render(host, { mesId, signature, key, cause, others }) {
        const d = this.adapter.win.document;
        const box = d.createElement('div');
        box.className = 'ngc-reply-notice';
        box.dataset.mesid = String(mesId);
        box.dataset.signature = signature;
        box.dataset.cause = cause.details?.cause ?? '';
        box.setAttribute('role', 'status');
        const regenerate = this.settings().regenerate_after_fix !== false;
        // A failed generation leaves the user's message last: Regenerate then asks again for its reply.
        const canRegenerate = mesId !== null || this.lastIsUser();
        box.innerHTML = `
            <div class="ngc-reply-notice-head"><span class="ngc-sev">NanoGPT</span> <strong>${escapeHtml(cause.title)}</strong></div>
            <div class="ngc-small">${escapeHtml(cause.explanation)}</div>
            ${cause.change ? `<div class="ngc-small ngc-change">${escapeHtml(cause.change)}</div>` : ''}
            ${others.length ? `<div class="ngc-small ngc-muted">${escapeHtml(this.t('Other possible causes'))}: ${others.map((o) => escapeHtml(o.title)).join('; ')}</div>` : ''}
            <div class="ngc-reply-notice-actions">
                ${cause.fixable ? `<button type="button" class="menu_button ngc-small-btn" data-act="fix">${escapeHtml(this.t('Fix'))}</button>` : ''}
                <button type="button" class="menu_button ngc-small-btn" data-act="dismiss">${escapeHtml(this.t('Not this'))}</button>
                ${cause.fixable && canRegenerate ? `<label class="checkbox_label ngc-small"><input type="checkbox" data-act="regenerate" ${regenerate ? 'checked' : ''}> ${escapeHtml(this.t('then regenerate'))}</label>` : ''}
            </div>
            <div class="ngc-small ngc-reply-notice-status" aria-live="polite"></div>`;
        box.addEventListener('click', (ev) => {
            const act = ev.target.closest?.('[data-act]')?.dataset.act;
            if (act === 'fix') this.fix(box, cause, mesId);
            else if (act === 'dismiss') this.dismiss(box, key);
            else if (act === 'undo') this.undo(box, cause);
        });
        box.querySelector('input[data-act="regenerate"]')?.addEventListener('change', (ev) => {
            this.settings().regenerate_after_fix = !!ev.target.checked;
            this.saveSettings();
        });
        host.appendChild(box);
    }

    status(box, text) {
        const el = box.querySelector('.ngc-reply-notice-status');
        if (el) el.textContent = text;
    }

    dismiss(box, key) {
        const list = (this.settings().dismissed_signatures ?? []).filter((k) => k !== key);
        list.push(key);
        this.settings().dismissed_signatures = list.slice(-DISMISSED_KEPT);
        this.saveSettings();
        box.remove();
    }

    async fix(box, cause, mesId) {
        box.querySelectorAll('button[data-act="fix"]').forEach((b) => { b.disabled = true; });
        const regenerate = !!box.querySelector('input[data-act="regenerate"]')?.checked;
        let data;
        try {
            data = await this.client.call('/api/doctor/signature/fix', { method: 'POST', body: { id: cause.id, message_id: mesId } });
        } catch (err) {
            this.status(box, `${this.t('Fix failed')}: ${err.message}`);
            return;
        }
        const r = data?.result ?? {};
        if (r.status === 'sent_live') {
            // The live `fix` event carries it out through ST's controls; onLiveFix finishes the notice.
            this.pending.set(cause.id, { box, mesId, regenerate });
            this.status(box, this.t('Applying…'));
        } else if (r.status === 'applied') {
            this.done(box, cause, mesId, regenerate);
        } else {
            this.status(box, r.message || this.t('Fix not applied'));
        }
    }

    /** Called for every live fix DoctorView carried out; finishes the notice whose fix it was. */
    onLiveFix(event, outcome) {
        const entry = this.pending.get(event?.finding_id);
        if (!entry || (event.undo_of !== null && event.undo_of !== undefined)) return;
        this.pending.delete(event.finding_id);
        if (outcome?.status !== 'applied') {
            this.status(entry.box, `${this.t('Fix not applied')}: ${outcome?.message ?? ''}`);
            return;
        }
        this.done(entry.box, { id: event.finding_id, change: event.change }, entry.mesId, entry.regenerate);
    }

    done(box, cause, mesId, regenerate) {
        box.dataset.fixed = 'true';
        box.querySelector('.ngc-reply-notice-actions').innerHTML = `<button type="button" class="menu_button ngc-small-btn" data-act="undo">${escapeHtml(this.t('Undo'))}</button>`;
        this.status(box, `${this.t('Fixed')}: ${cause.change ?? ''}`);
        const last = mesId === null ? this.lastIsUser() : this.isLastMessage(mesId);
        if (regenerate && last) this.regenerate();
    }

    isLastMessage(mesId) {
        const chat = this.adapter.ctx()?.chat;
        return Array.isArray(chat) && chat.length - 1 === mesId;
    }

    lastIsUser() {
        const chat = this.adapter.ctx()?.chat;
        return Array.isArray(chat) && chat.length > 0 && !!chat[chat.length - 1]?.is_user;
    }

    /** ST's own Regenerate (its options menu), which replaces the last reply. */
    regenerate() {
        const btn = this.adapter.win.document.getElementById('option_regenerate');
        if (btn) btn.click();
        else this.adapter.toast('info', this.t('Fixed. Regenerate the reply to see the difference.'));
    }

    async undo(box, cause) {
        let entries = [];
        try {
            entries = (await this.client.call('/api/doctor/journal?limit=20'))?.entries ?? [];
        } catch (err) {
            this.status(box, `${this.t('Undo failed')}: ${err.message}`);
            return;
        }
        const ids = entries.filter((e) => e.finding_id === cause.id && (e.undone_at === null || e.undone_at === undefined)).map((e) => e.journal_id);
        if (!ids.length) {
            this.status(box, this.t('Nothing to undo'));
            return;
        }
        const r = await this.undoJournal(ids);
        this.status(box, r.ok ? this.t('Undone') : r.message ?? this.t('Undo failed'));
        if (r.ok) box.querySelector('.ngc-reply-notice-actions').innerHTML = '';
    }
}
