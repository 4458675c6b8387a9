// The catalogue browser shown in ST's popup: search, filters, sorts, badges, thinking variants folded
// under their base, "new since last sync", and "Use". Rendering is one innerHTML write per change so
// 600 rows stay cheap; one delegated listener handles every row.

import {
    escapeHtml, filterCatalog, foldThinking, formatPrice, formatTokens, inputMultiplier, isSubscriptionModel, isUsableModelId, sortCatalog,
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
        this.error = null; // the last load's failure ({code, message}), shown instead of an empty list
        this.hidden = 0; // junk rows left out (no usable id)
        this.source = null; // 'cache' (the copy saved by the last page load) or 'service'
    }

    /** Models not seen in the previous session are "new"; so are the ids in the last refresh diff. */
    set(payload, source = 'service') {
        this.source = source;
        const all = payload?.models ?? [];
        this.models = all.filter((m) => isUsableModelId(m?.id));
        this.hidden = all.length - this.models.length;
        this.error = null;
        this.byId = new Map(this.models.map((m) => [m.id, m]));
        this.fetchedAt = payload?.fetched_at ?? null;
        this.stale = !!payload?.stale;
        this.staleReason = payload?.error?.message ?? null;
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
    constructor({ store, adapter, onUse, onRetry = null, loadDetails, currentModel = () => null, initialSort = 'name', showVariants = false, call = null }) {
        this.store = store;
        // `call(path)`: the service's JSON API; provider info and image models are asked for on demand.
        this.call = call;
        this.providerInfo = new Map(); // model id -> {loading} | {info} | {error}
        this.images = null; // null (not asked) | {loading} | {models, stale} | {error}
        this.adapter = adapter;
        this.onUse = onUse;
        this.onRetry = onRetry;
        this.currentModel = currentModel;
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
        <div class="ngc-catalog-list" role="list"></div>
        <div class="ngc-images">${this.call ? `<button type="button" class="menu_button ngc-small-btn" data-act="images" aria-expanded="false">${escapeHtml(t('Image models'))}</button>` : ''}
            <div class="ngc-images-list" aria-live="polite"></div></div>`;
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
        if (btn.dataset.act === 'retry') {
            this.onRetry?.();
        } else if (btn.dataset.act === 'clear') {
            this.clearFilters();
        } else if (btn.dataset.act === 'use') {
            this.onUse?.(id, btn);
        } else if (btn.dataset.act === 'info') {
            this.toggleDetails(id);
        } else if (btn.dataset.act === 'providers') {
            this.toggleProviders(id);
        } else if (btn.dataset.act === 'images') {
            this.toggleImages(btn);
        } else if (btn.dataset.act === 'variants') {
            if (this.expanded.has(id)) this.expanded.delete(id);
            else this.expanded.add(id);
            this.render();
            this.focusButton('variants', id);
        }
    }

    clearFilters() {
        const sort = this.filters.sort;
        this.filters = { q: '', tier: '', vision: false, reasoning: false, tools: false, maxPrice: null, minContext: null, sort, newOnly: false };
        for (const el of this.el.querySelectorAll('[data-f]')) {
            if (el.dataset.f === 'sort' || el.dataset.f === 'showVariants') continue;
            if (el.type === 'checkbox') el.checked = false;
            else el.value = '';
        }
        this.render();
    }

    /** A model's providers (NanoGPT's answer for that model only), asked the first time its row is opened. */
    async toggleProviders(id) {
        const state = this.providerInfo.get(id);
        if (state && !state.loading) {
            this.providerInfo.delete(id);
            this.render();
            return;
        }
        if (state?.loading || !this.call) return;
        this.providerInfo.set(id, { loading: true });
        this.render();
        try {
            const info = await this.call(`/api/catalog/providers?model=${encodeURIComponent(id)}`);
            this.providerInfo.set(id, { info });
        } catch (err) {
            this.providerInfo.set(id, { error: err?.message ?? String(err) });
        }
        this.render();
        this.el?.querySelector(`button[data-act="providers"][data-id="${CSS.escape(id)}"]`)?.focus();
    }

    providersHtml(id) {
        const state = this.providerInfo.get(id);
        if (!state) return '';
        const t = this.t;
        let body;
        if (state.loading) body = `<p class="ngc-muted">${escapeHtml(t('Asking NanoGPT…'))}</p>`;
        else if (state.error) body = `<p class="ngc-error">${escapeHtml(state.error)}</p>`;
        else if (!state.info.known) body = `<p>${escapeHtml(t('NanoGPT does not know this model id.'))}</p>`;
        else if (!state.info.supports_selection) body = `<p>${escapeHtml(t('NanoGPT picks the provider for this model; it cannot be chosen.'))}</p>`;
        else {
            const rows = state.info.providers.map((p) => `<li class="ngc-provider${p.available ? '' : ' ngc-unavailable'}" data-provider="${escapeHtml(p.id)}">
                <span class="ngc-provider-name">${escapeHtml(p.label || p.id)}</span>
                <span class="ngc-small">${escapeHtml(formatPrice(p.prompt))} / ${escapeHtml(formatPrice(p.completion))}</span>
                <span class="ngc-small ${p.available ? '' : 'ngc-error'}">${escapeHtml(p.available ? t('available') : t('unavailable'))}</span></li>`);
            body = `<ul class="ngc-provider-list" aria-label="${escapeHtml(t('Providers'))}">${rows.join('')}</ul>
                <p class="ngc-small ngc-muted">${escapeHtml(t('USD per 1M tokens, input / output. Choosing a provider bills a subscription model as pay-as-you-go.'))}</p>`;
        }
        const stale = state.info?.stale ? ` <span class="ngc-small ngc-muted">(${escapeHtml(t('stale'))})</span>` : '';
        return `<div class="ngc-providers" data-providers-for="${escapeHtml(id)}"><strong>${escapeHtml(t('Providers'))}</strong>${stale}${body}</div>`;
    }

    /** NanoGPT's image models (what ST's Image Generation lists for NanoGPT), with their price per image. */
    async toggleImages(btn) {
        const box = this.el.querySelector('.ngc-images-list');
        if (this.images && !this.images.loading) {
            this.images = null;
            box.innerHTML = '';
            btn.setAttribute('aria-expanded', 'false');
            return;
        }
        this.images = { loading: true };
        btn.setAttribute('aria-expanded', 'true');
        box.innerHTML = `<p class="ngc-muted">${escapeHtml(this.t('Asking NanoGPT…'))}</p>`;
        try {
            this.images = await this.call('/api/catalog/images');
        } catch (err) {
            this.images = { error: err?.message ?? String(err) };
        }
        box.innerHTML = this.imagesHtml();
    }

    imagesHtml() {
        const t = this.t;
        if (this.images?.error) return `<p class="ngc-error">${escapeHtml(this.images.error)}</p>`;
        const models = this.images?.models ?? [];
        if (!models.length) return `<p>${escapeHtml(t('NanoGPT lists no image models.'))}</p>`;
        const price = (prices) => Object.entries(prices ?? {})
            .map(([res, usd]) => `${res ? `${res}: ` : ''}$${Number(usd).toFixed(4).replace(/0+$/, '').replace(/\.$/, '')}`)
            .join(', ') || '—';
        const rows = models.map((m) => `<li class="ngc-image-model" data-image-id="${escapeHtml(m.id)}">
            <span class="ngc-model-name">${escapeHtml(m.name)}${m.subscription_included ? ' <span class="ngc-tag ngc-tag-sub">SUB</span>' : ''}</span>
            <span class="ngc-small ngc-muted">${escapeHtml(m.id)}</span>
            <span class="ngc-small" title="${escapeHtml(t('USD per image'))}">${escapeHtml(price(m.prices))}</span></li>`);
        return `<p class="ngc-small ngc-muted">${escapeHtml(t('Pick one in Image Generation (source NanoGPT). Prices are USD per image.'))}${this.images.stale ? ` (${escapeHtml(t('stale'))})` : ''}</p>
            <ul class="ngc-image-list">${rows.join('')}</ul>`;
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

    /** The model in use first, then the rest in the chosen order. */
    visible() {
        let list = filterCatalog(this.store.models, this.filters);
        if (this.filters.newOnly) list = list.filter((m) => this.store.newIds.has(m.id));
        const sorted = sortCatalog(list, this.filters.sort);
        const current = this.currentModel();
        const at = current ? sorted.findIndex((m) => m.id === current) : -1;
        if (at > 0) sorted.unshift(...sorted.splice(at, 1));
        return sorted;
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
        this.el.querySelector('.ngc-catalog-list').innerHTML = html.join('') || this.emptyHtml();
        const total = this.store.models.filter((m) => !m.is_router).length;
        this.el.querySelector('.ngc-catalog-count').textContent = `${rows.length} ${this.t('shown')} / ${total} ${this.t('models')}${this.store.stale ? ` · ${this.t('stale')}` : ''}`;
    }

    /** "No data" (nothing loaded, and why, with a retry) is not "no match" (filters too narrow). */
    emptyHtml() {
        if (!this.store.models.length) {
            const err = this.store.error;
            const when = this.store.fetchedAt ? new Date(this.store.fetchedAt * 1000).toLocaleString() : this.t('never');
            const why = err ? err.message : this.t('No models loaded yet.');
            return `<div class="ngc-empty" data-empty="no-data"><p>${escapeHtml(why)}</p><p class="ngc-small ngc-muted">${escapeHtml(this.t('Last sync'))}: ${escapeHtml(when)}</p>
                <button type="button" class="menu_button ngc-small-btn" data-act="retry">${escapeHtml(this.t('Retry'))}</button></div>`;
        }
        return `<div class="ngc-empty" data-empty="no-match"><p>${escapeHtml(this.t('No model matches these filters.'))}</p>
            <button type="button" class="menu_button ngc-small-btn" data-act="clear">${escapeHtml(this.t('Clear filters'))}</button></div>`;
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
        const inUse = m.id === this.currentModel();
        if (inUse) badges.unshift(`<span class="ngc-tag ngc-tag-current">${escapeHtml(this.t('in use'))}</span>`);
        const p = m.pricing ?? {};
        const id = escapeHtml(m.id);
        const toggle = variants.length
            ? `<button type="button" class="menu_button ngc-small-btn" data-act="variants" data-id="${id}" aria-expanded="${this.showVariants || this.expanded.has(m.id)}">${escapeHtml(this.t('thinking'))} (${variants.length})</button>`
            : '';
        const providersBtn = this.call && !m.is_router
            ? `<button type="button" class="menu_button ngc-small-btn" data-act="providers" data-id="${id}" aria-expanded="${this.providerInfo.has(m.id)}" aria-label="${escapeHtml(this.t('Providers of'))} ${escapeHtml(m.name || m.id)}">${escapeHtml(this.t('Providers'))}</button>`
            : '';
        const opened = this.open.has(m.id);
        const info = this.loadDetails
            ? `<button type="button" class="menu_button ngc-small-btn" data-act="info" data-id="${id}" aria-expanded="${opened}" title="${escapeHtml(this.t('Details'))}" aria-label="${escapeHtml(this.t('Details'))} ${escapeHtml(m.name || m.id)}">ⓘ</button>`
            : '';
        return `<div class="ngc-model${isVariant ? ' ngc-variant' : ''}${inUse ? ' ngc-current' : ''}" role="listitem" data-id="${id}"${inUse ? ' aria-current="true"' : ''}>
            <div class="ngc-model-main">
                <div class="ngc-model-name">${escapeHtml(m.name || m.id)} ${badges.join('')}</div>
                <div class="ngc-model-id ngc-small ngc-muted">${id}</div>
            </div>
            <div class="ngc-model-meta ngc-small">
                <span title="${escapeHtml(this.t('USD per 1M tokens, input / output'))}">${escapeHtml(formatPrice(p.prompt))} / ${escapeHtml(formatPrice(p.completion))}</span>
                <span title="${escapeHtml(this.t('Context length'))}">${escapeHtml(formatTokens(m.context_length))}</span>
            </div>
            <div class="ngc-model-actions">${info}${toggle}${providersBtn}<button type="button" class="menu_button ngc-small-btn" data-act="use" data-id="${id}" aria-label="${escapeHtml(this.t('Use'))} ${escapeHtml(m.name || m.id)}">${escapeHtml(this.t('Use'))}</button></div>
            ${this.providersHtml(m.id)}
            ${opened ? this.detailsHtml(m.id) : ''}
        </div>`;
    }
}
