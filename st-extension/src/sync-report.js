// What a catalogue sync changed, in words: which models were added and removed (the one in use called out),
// whose prices moved, and what changed in SillyTavern's own model list. Shown in the drawer's Models
// section, not only as a toast count. Pure except for `renderSyncChanges`, which writes one element.

import { escapeHtml, formatPrice } from './format.js';

const SHOWN = 8; // names listed per group before "and N more"

/**
 * Turn the service's diff ({added, removed, changed: [{id, fields}]}) into names. `before`/`after` map ids
 * to catalogue entries (a removed model's name is only known from before).
 */
export function describeDiff(diff, before, after, currentModel = null) {
    const name = (id, map) => map?.get(id)?.name || id;
    const added = (diff?.added ?? []).map((id) => ({ id, name: name(id, after) }));
    const removed = (diff?.removed ?? []).map((id) => ({ id, name: name(id, before), current: id === currentModel }));
    const prices = [];
    for (const c of diff?.changed ?? []) {
        const f = c.fields ?? {};
        if (!('pricing.prompt' in f) && !('pricing.completion' in f)) continue;
        const e = after?.get(c.id) ?? before?.get(c.id);
        const pair = (k, side) => (k in f ? f[k][side] : e?.pricing?.[k.split('.')[1]]);
        prices.push({
            id: c.id,
            name: name(c.id, after),
            from: `${formatPrice(pair('pricing.prompt', 0))}/${formatPrice(pair('pricing.completion', 0))}`,
            to: `${formatPrice(pair('pricing.prompt', 1))}/${formatPrice(pair('pricing.completion', 1))}`,
            current: c.id === currentModel,
        });
    }
    return { added, removed, prices, currentRemoved: removed.some((r) => r.current), empty: !added.length && !removed.length && !prices.length };
}

export function summaryLine(d) {
    if (d.empty) return 'no changes';
    return `+${d.added.length} added, −${d.removed.length} removed, ${d.prices.length} price change${d.prices.length === 1 ? '' : 's'}`;
}

/** `stNote`: what happened to SillyTavern's own model list (refreshed, or why not). */
export function renderSyncChanges(el, d, { t = (s) => s, when = null, stNote = null } = {}) {
    if (!el) return;
    const list = (items, fmt) => {
        const shown = items.slice(0, SHOWN).map((x) => `<li${x.current ? ' class="ngc-current"' : ''}>${fmt(x)}</li>`).join('');
        const more = items.length > SHOWN ? `<li class="ngc-muted">${escapeHtml(t('and'))} ${items.length - SHOWN} ${escapeHtml(t('more'))}</li>` : '';
        return `<ul>${shown}${more}</ul>`;
    };
    const label = (x) => `${escapeHtml(x.name)}${x.name !== x.id ? ` <span class="ngc-muted">${escapeHtml(x.id)}</span>` : ''}${x.current ? ` <strong>(${escapeHtml(t('the model you use'))})</strong>` : ''}`;
    const parts = [`<div class="ngc-small"><strong>${escapeHtml(t('Last sync'))}${when ? ` (${escapeHtml(when)})` : ''}:</strong> ${escapeHtml(t(summaryLine(d)))}</div>`];
    if (d.currentRemoved) {
        parts.push(`<p class="ngc-small ngc-error">${escapeHtml(t('NanoGPT no longer offers the model you use. The Settings doctor below suggests a replacement.'))}</p>`);
    }
    if (d.added.length) parts.push(`<div class="ngc-small" data-group="added">${escapeHtml(t('Added'))}:${list(d.added, label)}</div>`);
    if (d.removed.length) parts.push(`<div class="ngc-small" data-group="removed">${escapeHtml(t('Removed'))}:${list(d.removed, label)}</div>`);
    if (d.prices.length) {
        parts.push(`<div class="ngc-small" data-group="prices">${escapeHtml(t('Price changes (USD per 1M tokens, in/out)'))}:${list(d.prices, (x) => `${label(x)}: ${escapeHtml(x.from)} → ${escapeHtml(x.to)}`)}</div>`);
    }
    if (stNote) parts.push(`<div class="ngc-small ngc-muted" data-group="st">${escapeHtml(stNote)}</div>`);
    el.innerHTML = parts.join('');
    el.hidden = false;
}
