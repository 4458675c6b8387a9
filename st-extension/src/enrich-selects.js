// Adds price per 1M and a SUB mark to the labels of ST's own model <option>s where ST shows bare ids. ST
// 1.18+ renders its NanoGPT dropdown rows itself (select2 templateResult `getNanoGptModelTemplate` in
// public/scripts/openai.js: name, context, price, vision/reasoning/tools icons, "Sub"), so there the labels
// are left as ST made them: adding ours would only repeat what every row already says. ST 1.13.5 has a
// plain select of ids there, and every version shows plain ids for the Custom source. Values, order and
// optgroups are never touched, so ST's grouping, sorting and search keep working. Idempotent: the original
// label is kept in a data attribute, so re-running (ST refills the select on every Connect) never stacks
// suffixes. Junk rows from NanoGPT's list (no usable id) are hidden in every version.

import { enrichmentSuffix, isNanoGptUrl, isSubscriptionModel, isUsableModelId } from './format.js';

const BASE_ATTR = 'data-ngc-base';
const HIDDEN_ATTR = 'data-ngc-hidden';
const JUNK_ATTR = 'data-ngc-junk';

/** Enrich one <select>. Returns the number of options whose label changed. Pure DOM, no ST access. */
export function enrichSelect(select, byId, { enabled = true, labels = enabled, onlySubscription = false } = {}) {
    if (!select) return 0;
    let changed = 0;
    const current = select.value;
    for (const opt of select.options) {
        let base = opt.getAttribute(BASE_ATTR);
        // ST replaced the label since we enriched it (or never enriched): adopt the current text as base.
        if (base === null || (opt.dataset.ngcLabel !== undefined && opt.textContent !== opt.dataset.ngcLabel)) {
            base = opt.textContent;
            opt.setAttribute(BASE_ATTR, base);
        }
        const entry = byId.get(opt.value);
        const label = labels && entry ? base + enrichmentSuffix(entry) : base;
        if (opt.textContent !== label) {
            opt.textContent = label;
            changed++;
        }
        opt.dataset.ngcLabel = label;
        // A row NanoGPT sent without a usable id: nothing can be requested with it. ST's own empty
        // placeholder ("None", value "") is not junk.
        const junk = !isUsableModelId(opt.value) && !(opt.value === '' && opt.textContent.trim() !== '');
        if (junk && !opt.hasAttribute(JUNK_ATTR) && opt.value !== current) {
            opt.setAttribute(JUNK_ATTR, '1');
            opt.hidden = true;
            opt.disabled = true;
            changed++;
        }
        if (opt.hasAttribute(JUNK_ATTR)) continue;
        // "Only my subscription": hide the rest, but never the selected option (ST would lose it).
        const hide = enabled && onlySubscription && entry && !isSubscriptionModel(entry) && opt.value !== current;
        if (hide) {
            if (!opt.hasAttribute(HIDDEN_ATTR)) {
                opt.setAttribute(HIDDEN_ATTR, opt.disabled ? 'was-disabled' : '1');
                opt.hidden = true;
                opt.disabled = true;
            }
        } else if (opt.hasAttribute(HIDDEN_ATTR)) {
            opt.hidden = false;
            opt.disabled = opt.getAttribute(HIDDEN_ATTR) === 'was-disabled';
            opt.removeAttribute(HIDDEN_ATTR);
        }
    }
    return changed;
}

export class SelectEnricher {
    constructor({ adapter, store, settings }) {
        this.adapter = adapter;
        this.store = store;
        this.settings = settings;
        this.observers = [];
        this.scheduled = false;
    }

    attach() {
        const { nanogpt, custom } = this.adapter.modelSelects();
        for (const sel of [nanogpt, custom]) {
            if (!sel) continue;
            const mo = this.adapter.observe(sel, () => this.schedule());
            if (mo) this.observers.push({ mo, sel });
        }
        this.apply();
    }

    detach() {
        for (const { mo } of this.observers) mo.disconnect();
        this.observers = [];
    }

    /** Coalesce ST's option-by-option fill into one pass. */
    schedule() {
        if (this.scheduled) return;
        this.scheduled = true;
        queueMicrotask(() => {
            this.scheduled = false;
            this.apply();
        });
    }

    apply() {
        const s = this.settings();
        const { nanogpt, custom } = this.adapter.modelSelects();
        const customIsNano = isNanoGptUrl(this.adapter.chatSettings()?.custom_url);
        let changed = 0;
        // Our own label writes are mutations too; pause the observers so they do not re-trigger us.
        for (const { mo } of this.observers) mo.disconnect();
        try {
            const opts = { enabled: !!s.enrich_selects && this.store.loaded, onlySubscription: !!s.only_subscription };
            this.adapter.markSubscriptionFilter(opts.enabled && opts.onlySubscription);
            for (const [sel, o] of [[nanogpt, opts], [custom, { ...opts, enabled: opts.enabled && customIsNano }]]) {
                // ST draws rich rows itself (1.18+ NanoGPT dropdown): keep its labels, still filter and hide junk.
                const labels = o.enabled && !this.adapter.hasRichTemplate(sel);
                const n = enrichSelect(sel, this.store.byId, { ...o, labels });
                if (n) this.adapter.refreshSelectDisplay(sel);
                changed += n;
            }
        } finally {
            for (const { mo, sel } of this.observers) mo.observe(sel, { childList: true, subtree: true });
        }
        return changed;
    }
}
