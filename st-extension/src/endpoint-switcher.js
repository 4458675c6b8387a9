// One-click NanoGPT endpoints: Chat Completion Custom with a chosen base URL, back to ST's built-in
// NanoGPT source, or Text Completion Generic. Shows which one the service recommends and why.

import { endpointIdForUrl, escapeHtml } from './format.js';

export class EndpointSwitcher {
    constructor({ root, adapter, onSwitched }) {
        this.root = root;
        this.adapter = adapter;
        this.onSwitched = onSwitched ?? (() => {});
        this.t = (s) => adapter.t(s);
        this.data = null;
        root.addEventListener('click', (ev) => {
            const btn = ev.target.closest?.('button[data-ep]');
            if (btn) this.switchTo(btn.dataset.ep, btn.dataset.mode);
        });
    }

    set(data) {
        this.data = data;
        this.render();
    }

    current() {
        const a = this.adapter.activeSource();
        if (a.mainApi === 'openai' && a.source === 'nanogpt') return { mode: 'chat', id: 'builtin' };
        if (a.mainApi === 'openai' && a.source === 'custom') return { mode: 'chat', id: endpointIdForUrl(a.customUrl, this.data?.endpoints) };
        if (a.mainApi === 'textgenerationwebui') {
            return { mode: 'text', id: endpointIdForUrl(this.adapter.textSettings()?.server_urls?.generic, this.data?.endpoints) };
        }
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
        const btn = (id, mode, label, title) => {
            const active = cur.mode === mode && cur.id === id;
            return `<button type="button" class="menu_button ngc-ep${active ? ' ngc-active' : ''}${id === rec ? ' ngc-rec' : ''}"
                data-ep="${escapeHtml(id)}" data-mode="${mode}" aria-pressed="${active}" title="${escapeHtml(title ?? '')}">${escapeHtml(label)}${id === rec ? ' ★' : ''}</button>`;
        };
        const chat = d.endpoints.filter((e) => e.chat_completion !== false);
        const text = d.endpoints.filter((e) => e.text_completion);
        const recEp = d.endpoints.find((e) => e.id === rec);
        this.root.innerHTML = `
            ${rec ? `<p class="ngc-small ngc-rec-line"><strong>${escapeHtml(this.t('Recommended'))}:</strong> ${escapeHtml(recEp?.title ?? rec)}${d.reason ? ` — ${escapeHtml(d.reason)}` : ''}</p>` : ''}
            <div class="ngc-small ngc-muted">${escapeHtml(this.t('Chat Completion'))}</div>
            <div class="ngc-row ngc-wrap">${btn('builtin', 'chat', this.t('Built-in NanoGPT'), this.t('SillyTavern\'s own NanoGPT source'))}
                ${chat.map((e) => btn(e.id, 'chat', e.id, `${e.title ?? ''}: ${e.description ?? ''} (${e.url})`)).join('')}</div>
            ${text.length ? `<div class="ngc-small ngc-muted">${escapeHtml(this.t('Text Completion'))}</div>
            <div class="ngc-row ngc-wrap">${text.map((e) => btn(e.id, 'text', e.id, `${e.title ?? ''} (${e.url})`)).join('')}</div>` : ''}`;
    }

    /** Returns the URL switched to ('builtin' for ST's own source) or throws with a readable message. */
    switchTo(id, mode = 'chat') {
        if (mode === 'chat' && id === 'builtin') {
            this.adapter.useBuiltinNanoGpt();
            this.adapter.clickConnect('openai');
            this.render();
            this.onSwitched('builtin');
            return 'builtin';
        }
        const ep = this.data?.endpoints?.find((e) => e.id === id);
        if (!ep) throw new Error(`${this.t('Unknown endpoint')}: ${id}`);
        if (mode === 'text') {
            this.adapter.useTextEndpoint(ep.url);
            this.adapter.clickConnect('textgenerationwebui');
        } else {
            this.adapter.useCustomEndpoint(ep.url);
            this.adapter.clickConnect('openai');
        }
        this.render();
        this.onSwitched(ep.url);
        return ep.url;
    }
}
