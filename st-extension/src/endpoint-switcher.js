// One-click NanoGPT endpoints: Chat Completion Custom with a chosen base URL, back to ST's built-in NanoGPT
// source, or Text Completion Generic. Buttons carry readable names with the address id secondary; each
// explanation is expandable text (readable by touch, not a hover tooltip). After a click the panel shows
// every step of the switch (ConnectionFlow) with what is ready, what is not and why, and an Undo.

import { endpointIdForUrl, escapeHtml } from './format.js';
import { SwitchError } from './connection-flow.js';

export class EndpointSwitcher {
    constructor({ root, adapter, flow, onSwitched }) {
        this.root = root;
        this.adapter = adapter;
        this.flow = flow;
        this.onSwitched = onSwitched ?? (() => {});
        this.t = (s) => adapter.t(s);
        this.data = null;
        this.report = null;
        this.error = null;
        this.running = null;
        root.addEventListener('click', (ev) => {
            const btn = ev.target.closest?.('button[data-ep]');
            if (btn) {
                this.switchTo(btn.dataset.ep, btn.dataset.mode).catch(() => {});
                return;
            }
            if (ev.target.closest?.('button[data-act="undo-switch"]')) this.undo();
            if (ev.target.closest?.('button[data-act="retry-switch"]') && this.report) {
                this.switchTo(this.report.target.id, this.report.target.mode).catch(() => {});
            }
        });
    }

    set(data) {
        this.data = data;
        this.render();
    }

    current() {
        const kind = this.adapter.nanoKind();
        const a = this.adapter.activeSource();
        const idFor = (url) => endpointIdForUrl(url, this.data?.endpoints);
        if (kind === 'builtin') return { mode: 'chat', id: 'builtin' };
        if (kind === 'chat') return { mode: 'chat', id: idFor(a.customUrl) };
        if (kind === 'text') return { mode: 'text', id: idFor(a.genericUrl) };
        return { mode: null, id: null };
    }

    render() {
        const d = this.data;
        if (!d?.endpoints?.length) {
            this.root.innerHTML = `<div class="ngc-muted ngc-small">${escapeHtml(this.t('Endpoints appear once the service is connected.'))}</div>`;
            return;
        }
        const cur = this.current();
        const rec = d.recommended;
        const btn = (id, mode, title, sub) => {
            const active = cur.mode === mode && cur.id === id;
            return `<button type="button" class="menu_button ngc-ep${active ? ' ngc-active' : ''}${id === rec ? ' ngc-rec' : ''}"
                data-ep="${escapeHtml(id)}" data-mode="${mode}" aria-pressed="${active}"${this.running ? ' disabled' : ''}>
                <span class="ngc-ep-title">${escapeHtml(title)}${id === rec && mode === 'chat' ? ' ★' : ''}</span>
                <span class="ngc-ep-id">${escapeHtml(sub)}</span></button>`;
        };
        const chat = d.endpoints.filter((e) => e.chat_completion !== false);
        const text = d.endpoints.filter((e) => e.text_completion);
        const recEp = d.endpoints.find((e) => e.id === rec);
        const explain = (e) => `<details class="ngc-ep-explain"><summary>${escapeHtml(e.title ?? e.id)} <span class="ngc-muted">(${escapeHtml(e.id)})</span></summary>
            <p class="ngc-small">${escapeHtml(e.description ?? '')}</p><code class="ngc-small">${escapeHtml(e.url)}</code></details>`;
        const inUse = this.adapter.nanoKind()
            ? `<p class="ngc-small ngc-in-use"><strong>${escapeHtml(this.t('In use'))}:</strong> ${escapeHtml(this.flow.describeCurrent())}</p>`
            : `<p class="ngc-small ngc-in-use ngc-muted">${escapeHtml(this.t('NanoGPT is not the active connection in SillyTavern.'))}</p>`;
        this.root.innerHTML = `
            ${rec ? `<p class="ngc-small ngc-rec-line"><strong>${escapeHtml(this.t('Recommended'))}:</strong> ${escapeHtml(recEp?.title ?? rec)}${d.reason ? ` — ${escapeHtml(d.reason)}` : ''}</p>` : ''}
            ${inUse}
            <div class="ngc-small ngc-muted">${escapeHtml(this.t('Chat Completion'))}</div>
            <div class="ngc-ep-grid">${btn('builtin', 'chat', this.t('Built-in NanoGPT'), this.t('SillyTavern\'s NanoGPT source'))}
                ${chat.map((e) => btn(e.id, 'chat', e.title ?? e.id, e.id)).join('')}</div>
            ${text.length ? `<div class="ngc-small ngc-muted">${escapeHtml(this.t('Text Completion'))}</div>
            <div class="ngc-ep-grid">${text.map((e) => btn(e.id, 'text', `${e.title ?? e.id}`, `text:${e.id}`)).join('')}</div>` : ''}
            <div class="ngc-ep-explanations"><div class="ngc-small ngc-muted">${escapeHtml(this.t('What each address is for'))}</div>${d.endpoints.map(explain).join('')}</div>
            <div id="ngc_switch_report" class="ngc-switch-report" aria-live="polite">${this.reportHtml()}</div>`;
    }

    reportHtml() {
        if (this.running) {
            return `<p class="ngc-small"><span class="fa-solid fa-spinner fa-spin" aria-hidden="true"></span> ${escapeHtml(this.t('Switching to'))} ${escapeHtml(this.running)}…</p>`;
        }
        if (this.error) return `<p class="ngc-small ngc-error" data-state="refused">${escapeHtml(this.error)}</p>`;
        const r = this.report;
        if (!r) return '';
        const icon = (ok) => (ok === true ? '✓' : ok === false ? '✗' : '•');
        const head = r.ready
            ? `${this.t('Ready to chat')}: ${r.target.title}`
            : `${this.t('Switched to')} ${r.target.title}, ${this.t('but SillyTavern is not ready yet')}`;
        return `<div data-state="${r.ready ? 'ready' : 'incomplete'}">
            <p class="ngc-small"><strong>${escapeHtml(head)}</strong></p>
            <ul class="ngc-steps">${r.steps.map((s) => `<li data-step="${escapeHtml(s.key)}" data-ok="${s.ok}"><span aria-hidden="true">${icon(s.ok)}</span> ${escapeHtml(s.text)}</li>`).join('')}</ul>
            ${r.changes.length ? `<details class="ngc-small"><summary>${escapeHtml(this.t('What changed in SillyTavern'))} (${r.changes.length})</summary><ul class="ngc-changes">${r.changes.map((c) => `<li>${escapeHtml(c)}</li>`).join('')}</ul></details>` : ''}
            <div class="ngc-row">
                ${r.ready ? '' : `<button type="button" class="menu_button ngc-small-btn" data-act="retry-switch">${escapeHtml(this.t('Try again'))}</button>`}
                <button type="button" class="menu_button ngc-small-btn" data-act="undo-switch">${escapeHtml(this.t('Undo switch'))}</button>
            </div></div>`;
    }

    /**
     * Run a switch. Resolves with the report; rejects with a readable message when the target is impossible
     * (nothing changed then). The panel shows either.
     */
    async switchTo(id, mode = 'chat') {
        this.error = null;
        let report;
        try {
            this.flow.validate(mode, id, this.data?.endpoints);
        } catch (err) {
            this.error = err.message;
            this.render();
            throw err;
        }
        const ep = this.data?.endpoints?.find((e) => e.id === id);
        this.running = id === 'builtin' ? this.t('Built-in NanoGPT') : (ep?.title ?? id);
        this.render();
        try {
            report = await this.flow.switchTo({ mode, id, endpoints: this.data?.endpoints });
        } catch (err) {
            this.running = null;
            this.error = err instanceof SwitchError ? err.message : `${this.t('The switch failed')}: ${err.message}`;
            this.render();
            throw err;
        }
        this.running = null;
        this.report = report;
        this.render();
        this.onSwitched(report);
        return report;
    }

    async undo() {
        const r = this.report;
        if (!r) return [];
        this.report = null;
        this.running = this.t('the previous connection');
        this.render();
        let messages = [];
        try {
            messages = await this.flow.undo(r);
        } finally {
            this.running = null;
            this.render();
        }
        this.adapter.toast('info', `${this.t('Switch undone')}${messages.length ? `: ${messages.join(' ')}` : ''}`);
        this.onSwitched(null);
        return messages;
    }
}
