// The catalogue browser shown in ST's popup: search, filters, sorts, badges, thinking variants folded
// under their base, "new since last sync", and "Use". Rendering is one innerHTML write per change so
// 600 rows stay cheap; one delegated listener handles every row.

import {
    escapeHtml, filterCatalog, foldThinking, formatPrice, formatTokens, inputMultiplier, isSubscriptionModel, sortCatalog,
} from './format.js';

const SEEN_KEY = 'nanogpt_companion.seen_models';

export class CatalogStore {
    constructor(storage = globalThis.localStorage) {
        this.storage = storage;
        this.models = [];
        this.byId = new Map();
        this.fetchedAt = null;
        this.stale = false;
        this.newIds = new Set();
        this.loaded = false;
        this.source = null; // 'cache' (the copy saved by the last page load) or 'service'
    }

    /** Models not seen in the previous session are "new"; so are the ids in the last refresh diff. */
    set(payload, source = 'service') {
        this.source = source;
        this.models = payload?.models ?? [];
        this.byId = new Map(this.models.map((m) => [m.id, m]));
        this.fetchedAt = payload?.fetched_at ?? null;
        this.stale = !!payload?.stale;
        this.loaded = true;
        let seen = null;
        try {
            const raw = this.storage?.getItem(SEEN_KEY);
            seen = raw ? new Set(JSON.parse(raw)) : null;
        } catch {
            seen = null;
        }
        if (seen) for (const m of this.models) if (!seen.has(m.id)) this.newIds.add(m.id);
        try {
            this.storage?.setItem(SEEN_KEY, JSON.stringify(this.models.map((m) => m.id)));
        } catch {
            // Storage full or disabled: "new" marks are a nicety, not worth a warning.
        }
    }

    markNew(ids) {
        for (const id of ids ?? []) this.newIds.add(id);
    }
}

export class CatalogView {
    constructor({ store, adapter, onUse, loadDetails, initialSort = 'name', showVariants = false }) {
        this.store = store;
        this.adapter = adapter;
        this.onUse = onUse;
        // The list carries what rows show; the rest of an entry (description, modalities, cache prices)
        // is asked for when a row is opened, and kept for the life of the popup.
        this.loadDetails = loadDetails;
        this.details = new Map(); // id -> entry | {error}
        this.open = new Set();
        this.t = (s) => adapter.t(s);
        this.filters = { q: '', tier: '', vision: false, reasoning: false, tools: false, maxPrice: null, minContext: null, sort: initialSort, newOnly: false };
        this.showVariants = showVariants;
        this.expanded = new Set();
        this.el = null;
    }

    /** Build the popup body (not yet attached). */
    build() {
        const t = this.t;
        const el = document.createElement('div');
        el.className = 'ngc-catalog';
        el.innerHTML = `
        <h3 class="ngc-catalog-title">${escapeHtml(t('NanoGPT models'))}</h3>
        <div class="ngc-catalog-toolbar" role="search">
            <label class="ngc-field ngc-grow"><span>${escapeHtml(t('Search'))}</span>
                <input type="search" class="text_pole" data-f="q" placeholder="${escapeHtml(t('name, id or vendor'))}" autocomplete="off"></label>
            <label class="ngc-field"><span>${escapeHtml(t('Tier'))}</span>
                <select class="text_pole" data-f="tier">
                    <option value="">${escapeHtml(t('All'))}</option>
                    <option value="subscription">${escapeHtml(t('Subscription'))}</option>
                    <option value="paid">${escapeHtml(t('Paid'))}</option>
                    <option value="personalized">${escapeHtml(t('Personalized'))}</option>
                </select></label>
            <label class="ngc-field"><span>${escapeHtml(t('Max $ / 1M in'))}</span>
                <input type="number" class="text_pole" data-f="maxPrice" min="0" step="0.1" inputmode="decimal"></label>
            <label class="ngc-field"><span>${escapeHtml(t('Min context'))}</span>
                <select class="text_pole" data-f="minContext">
                    <option value="">${escapeHtml(t('Any'))}</option>
                    <option value="32000">32k</option><option value="128000">128k</option>
                    <option value="200000">200k</option><option value="1000000">1M</option>
                </select></label>
            <label class="ngc-field"><span>${escapeHtml(t('Sort'))}</span>
                <select class="text_pole" data-f="sort">
                    <option value="name">${escapeHtml(t('Name'))}</option>
                    <option value="price">${escapeHtml(t('Price'))}</option>
                    <option value="context">${escapeHtml(t('Context'))}</option>
                    <option value="newest">${escapeHtml(t('Newest'))}</option>
                </select></label>
        </div>
        <div class="ngc-catalog-toggles">
            <label class="checkbox_label"><input type="checkbox" data-f="vision">${escapeHtml(t('Vision'))}</label>
            <label class="checkbox_label"><input type="checkbox" data-f="reasoning">${escapeHtml(t('Reasoning'))}</label>
            <label class="checkbox_label"><input type="checkbox" data-f="tools">${escapeHtml(t('Tool calling'))}</label>
            <label class="checkbox_label"><input type="checkbox" data-f="newOnly">${escapeHtml(t('New only'))}</label>
            <label class="checkbox_label"><input type="checkbox" data-f="showVariants">${escapeHtml(t('Show thinking variants'))}</label>
        </div>
        <div class="ngc-catalog-count ngc-small ngc-muted" aria-live="polite"></div>
        <div class="ngc-catalog-list" role="list"></div>`;
        this.el = el;
        el.querySelector('[data-f="sort"]').value = this.filters.sort;
        el.querySelector('[data-f="showVariants"]').checked = this.showVariants;
        el.addEventListener('input', (ev) => this.onFilter(ev));
        el.addEventListener('change', (ev) => this.onFilter(ev));
        el.addEventListener('click', (ev) => this.onClick(ev));
        this.render();
        return el;
    }

    onFilter(ev) {
        const f = ev.target?.dataset?.f;
        if (!f) return;
        const tgt = ev.target;
        if (f === 'showVariants') this.showVariants = tgt.checked;
        else if (tgt.type === 'checkbox') this.filters[f] = tgt.checked;
        else if (f === 'maxPrice' || f === 'minContext') this.filters[f] = tgt.value === '' ? null : Number(tgt.value);
        else this.filters[f] = tgt.value;
        // A text field fires `change` again on blur (e.g. when the user clicks "Use"); re-rendering then
        // would replace the button under the pointer and swallow the click.
        const key = JSON.stringify([this.filters, this.showVariants]);
        if (key === this.renderedKey) return;
        this.render();
    }

    onClick(ev) {
        const btn = ev.target.closest?.('button[data-act]');
        if (!btn) return;
        const id = btn.dataset.id;
        if (btn.dataset.act === 'use') {
            this.onUse?.(id, btn);
        } else if (btn.dataset.act === 'info') {
            this.toggleDetails(id);
        } else if (btn.dataset.act === 'variants') {
            if (this.expanded.has(id)) this.expanded.delete(id);
            else this.expanded.add(id);
            this.render();
            this.focusButton('variants', id);
        }
    }

    async toggleDetails(id) {
        if (this.open.has(id)) this.open.delete(id);
        else this.open.add(id);
        this.render();
        this.focusButton('info', id);
        if (!this.open.has(id) || this.details.has(id) || !this.loadDetails) return;
        try {
            this.details.set(id, await this.loadDetails(id));
        } catch (err) {
            this.details.set(id, { error: err?.message ?? String(err) });
        }
        if (this.open.has(id)) {
            this.render();
            this.focusButton('info', id);
        }
    }

    focusButton(act, id) {
        this.el?.querySelector(`button[data-act="${act}"][data-id="${CSS.escape(id)}"]`)?.focus();
    }

    detailsHtml(id) {
        const d = this.details.get(id);
        if (!d) return `<div class="ngc-model-details ngc-small ngc-muted">${escapeHtml(this.t('Loading…'))}</div>`;
        if (d.error) return `<div class="ngc-model-details ngc-small ngc-muted">${escapeHtml(d.error)}</div>`;
        const facts = [];
        const p = d.pricing ?? {};
        if (d.max_output_tokens) facts.push(`${this.t('Max output')} ${formatTokens(d.max_output_tokens)}`);
        if (d.input_modalities?.length) facts.push(`${this.t('Input')}: ${d.input_modalities.join(', ')}`);
        if (d.reasoning_efforts?.length) facts.push(`${this.t('Reasoning effort')}: ${d.reasoning_efforts.join(', ')}`);
        if (p.cache_read != null || p.cache_write != null) facts.push(`${this.t('Cache read / write')} ${formatPrice(p.cache_read)} / ${formatPrice(p.cache_write)}`);
        if (d.subscription?.note) facts.push(d.subscription.note);
        return `<div class="ngc-model-details ngc-small" data-details-for="${escapeHtml(id)}">
            ${d.description ? `<p class="ngc-model-description">${escapeHtml(d.description)}</p>` : ''}
            ${facts.length ? `<div class="ngc-muted">${facts.map(escapeHtml).join(' · ')}</div>` : ''}
        </div>`;
    }

    visible() {
        let list = filterCatalog(this.store.models, this.filters);
        if (this.filters.newOnly) list = list.filter((m) => this.store.newIds.has(m.id));
        return sortCatalog(list, this.filters.sort);
    }

    render() {
        if (!this.el) return;
        this.renderedKey = JSON.stringify([this.filters, this.showVariants]);
        const list = this.visible();
        const rows = foldThinking(list);
        const html = [];
        for (const { entry, variants } of rows) {
            html.push(this.rowHtml(entry, variants, false));
            if (variants.length && (this.showVariants || this.expanded.has(entry.id))) {
                for (const v of variants) html.push(this.rowHtml(v, [], true));
            }
        }
        this.el.querySelector('.ngc-catalog-list').innerHTML = html.join('') || `<div class="ngc-muted">${escapeHtml(this.t('No model matches these filters.'))}</div>`;
        const total = this.store.models.filter((m) => !m.is_router).length;
        this.el.querySelector('.ngc-catalog-count').textContent = `${rows.length} ${this.t('shown')} / ${total} ${this.t('models')}${this.store.stale ? ` · ${this.t('stale')}` : ''}`;
    }

    rowHtml(m, variants, isVariant) {
        const caps = m.capabilities ?? {};
        const badges = [];
        if (isSubscriptionModel(m)) badges.push('<span class="ngc-tag ngc-tag-sub" title="Included in your subscription">SUB</span>');
        const mult = inputMultiplier(m);
        if (mult !== null && mult !== 1) badges.push(`<span class="ngc-tag ngc-tag-mult" title="Input tokens count ${mult}x against the subscription quota">x${escapeHtml(mult)}</span>`);
        if (caps.vision === true) badges.push('<span class="ngc-tag" title="Vision">vision</span>');
        if (caps.reasoning === true) badges.push('<span class="ngc-tag" title="Reasoning">reasoning</span>');
        if (caps.tool_calling === true) badges.push('<span class="ngc-tag" title="Tool calling">tools</span>');
        if (this.store.newIds.has(m.id)) badges.push('<span class="ngc-tag ngc-tag-new">new</span>');
        const p = m.pricing ?? {};
        const id = escapeHtml(m.id);
        const toggle = variants.length
            ? `<button type="button" class="menu_button ngc-small-btn" data-act="variants" data-id="${id}" aria-expanded="${this.showVariants || this.expanded.has(m.id)}">${escapeHtml(this.t('thinking'))} (${variants.length})</button>`
            : '';
        const opened = this.open.has(m.id);
        const info = this.loadDetails
            ? `<button type="button" class="menu_button ngc-small-btn" data-act="info" data-id="${id}" aria-expanded="${opened}" title="${escapeHtml(this.t('Details'))}" aria-label="${escapeHtml(this.t('Details'))} ${escapeHtml(m.name || m.id)}">ⓘ</button>`
            : '';
        return `<div class="ngc-model${isVariant ? ' ngc-variant' : ''}" role="listitem" data-id="${id}">
            <div class="ngc-model-main">
                <div class="ngc-model-name">${escapeHtml(m.name || m.id)} ${badges.join('')}</div>
                <div class="ngc-model-id ngc-small ngc-muted">${id}</div>
            </div>
            <div class="ngc-model-meta ngc-small">
                <span title="${escapeHtml(this.t('USD per 1M tokens, input / output'))}">${escapeHtml(formatPrice(p.prompt))} / ${escapeHtml(formatPrice(p.completion))}</span>
                <span title="${escapeHtml(this.t('Context length'))}">${escapeHtml(formatTokens(m.context_length))}</span>
            </div>
            <div class="ngc-model-actions">${info}${toggle}<button type="button" class="menu_button ngc-small-btn" data-act="use" data-id="${id}" aria-label="${escapeHtml(this.t('Use'))} ${escapeHtml(m.name || m.id)}">${escapeHtml(this.t('Use'))}</button></div>
            ${opened ? this.detailsHtml(m.id) : ''}
        </div>`;
    }
}
