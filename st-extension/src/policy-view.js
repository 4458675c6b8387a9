// One control per doctor rule: automatic / ask / off (the service's GET and PUT /api/doctor/policy), with
// the rule's name and what it checks, and a note naming the findings hidden because their rule is off.

import { escapeHtml } from './format.js';

const CHOICES = [
    ['auto', 'Automatic'],
    ['ask', 'Ask'],
    ['off', 'Off'],
];

export class PolicyView {
    constructor({ root, adapter, client, onChange }) {
        this.root = root;
        this.adapter = adapter;
        this.client = client;
        this.onChange = onChange ?? (() => {});
        this.t = (s) => adapter.t(s);
        this.rules = [];
        this.list = root.querySelector('#ngc_policy_list');
        this.note = root.querySelector('#ngc_muted_note');
        this.list?.addEventListener('change', (ev) => {
            const sel = ev.target.closest?.('select[data-rule]');
            if (sel) this.set(sel.dataset.rule, sel.value, sel);
        });
        this.note?.addEventListener('click', (ev) => {
            if (ev.target.closest?.('button[data-act="show-policies"]')) {
                const box = root.querySelector('#ngc_policies');
                if (box) box.open = true;
                box?.scrollIntoView?.({ block: 'nearest' });
            }
        });
    }

    async refresh() {
        try {
            const data = await this.client.call('/api/doctor/policy');
            this.rules = data.rules ?? Object.entries(data.policies ?? {}).map(([id, policy]) => ({ id, title: id, summary: '', policy }));
        } catch (err) {
            console.debug('[NanoGPT Companion] policies unavailable', err?.code);
            this.rules = [];
        }
        this.render();
    }

    render() {
        if (!this.list) return;
        if (!this.rules.length) {
            this.list.innerHTML = `<p class="ngc-small ngc-muted">${escapeHtml(this.t('Policies appear once the service has a SillyTavern folder to check.'))}</p>`;
            return;
        }
        this.list.innerHTML = this.rules.map((r) => `<div class="ngc-policy" data-rule="${escapeHtml(r.id)}" data-policy="${escapeHtml(r.policy)}">
            <label class="ngc-policy-label" for="ngc_policy_${escapeHtml(r.id.replace(/\W/g, '_'))}">
                <span>${escapeHtml(r.title)}</span>
                ${r.summary ? `<span class="ngc-small ngc-muted">${escapeHtml(r.summary)}</span>` : ''}
            </label>
            <select id="ngc_policy_${escapeHtml(r.id.replace(/\W/g, '_'))}" class="text_pole ngc-policy-select" data-rule="${escapeHtml(r.id)}">
                ${CHOICES.map(([v, l]) => `<option value="${v}"${v === r.policy ? ' selected' : ''}>${escapeHtml(this.t(l))}${v === r.default_policy ? ` (${escapeHtml(this.t('default'))})` : ''}</option>`).join('')}
            </select></div>`).join('');
    }

    async set(rule, policy, select) {
        select.disabled = true;
        try {
            const data = await this.client.call('/api/doctor/policy', { method: 'PUT', body: { rule, policy } });
            this.rules = data.rules ?? this.rules.map((r) => (r.id === rule ? { ...r, policy } : r));
            const title = this.rules.find((r) => r.id === rule)?.title ?? rule;
            const word = this.t(CHOICES.find(([v]) => v === policy)?.[1] ?? policy);
            this.adapter.toast('success', `${title}: ${word}`);
        } catch (err) {
            this.adapter.toast('warning', `${this.t('Policy not changed')}: ${err.message}`);
        } finally {
            select.disabled = false;
            this.render();
        }
        this.onChange();
    }

    /**
     * "1 finding hidden: its rule is off: <the finding's title>" under the findings list, naming each hidden
     * finding so the user sees what is off (none hides the note).
     */
    showMuted(hidden) {
        if (!this.note) return;
        const list = hidden ?? [];
        const count = list.length;
        this.note.hidden = !count;
        const names = [...new Set(list.map((f) => f.title || f.rule || f.id))];
        this.note.innerHTML = count
            ? `${escapeHtml(String(count))} ${escapeHtml(count === 1 ? this.t('finding hidden: its rule is off') : this.t('findings hidden: their rule is off'))}: `
                + `<span class="ngc-muted-names">${names.map(escapeHtml).join('; ')}</span>. `
                + `<button type="button" class="menu_button ngc-small-btn" data-act="show-policies">${escapeHtml(this.t('Policies'))}</button>`
            : '';
    }
}
