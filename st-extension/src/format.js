// Pure helpers: no DOM, no ST, no network. Kept apart so they can be unit-tested in any JS runtime
// and reused by every view without dragging ST's globals along.

export const EXTENSION_NAME = 'nanogpt-companion';
export const SETTINGS_KEY = 'nanogpt_companion';
export const API_VERSION = 1;
export const START_COMMAND = 'nanogpt-companion serve --sillytavern <path to SillyTavern>';

/** Escape text for safe interpolation into HTML (model names come from a third party). */
export function escapeHtml(value) {
    return String(value ?? '').replace(/[&<>"']/g, (c) => ({
        '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\'': '&#39;',
    })[c]);
}

function isNum(n) {
    return typeof n === 'number' && Number.isFinite(n);
}

export function formatUsd(n) {
    if (!isNum(n)) return '—';
    return `$${n.toFixed(2)}`;
}

export function formatXno(n) {
    if (!isNum(n)) return '—';
    return `${n.toFixed(2)} XNO`;
}

/** Token counts the way people read them: 60M, 1.2M, 450k. */
export function formatTokens(n) {
    if (!isNum(n)) return '—';
    const abs = Math.abs(n);
    if (abs >= 1e9) return `${trim(n / 1e9)}B`;
    if (abs >= 1e6) return `${trim(n / 1e6)}M`;
    if (abs >= 1e3) return `${trim(n / 1e3)}k`;
    return String(Math.round(n));
}

function trim(x) {
    // One decimal below 10 (1.2M), none above (60M): enough precision for a glance.
    return Math.abs(x) < 10 ? String(Math.round(x * 10) / 10) : String(Math.round(x));
}

/** Price per 1M tokens; NanoGPT's float noise (0.42000000000000004) is rounded for display only. */
export function formatPrice(p) {
    if (!isNum(p)) return '?';
    if (p === 0) return '$0';
    if (p < 0.01) return `$${Number(p.toPrecision(2))}`;
    return `$${Number(p.toFixed(p < 1 ? 3 : 2))}`;
}

export function formatPercent(fraction) {
    if (!isNum(fraction)) return '—';
    return `${Math.round(fraction * 1000) / 10}%`;
}

/** "3d 4h", "5h 12m", "12m", "now". resetAt is epoch milliseconds (NanoGPT's unit). */
export function formatCountdown(resetAtMs, nowMs) {
    if (!isNum(resetAtMs)) return '';
    const s = Math.max(0, Math.floor((resetAtMs - nowMs) / 1000));
    if (s === 0) return 'now';
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${m}m`;
    return `${Math.max(1, m)}m`;
}

export const QUOTA_LABELS = {
    weekly_input_tokens: 'Weekly input tokens',
    daily_input_tokens: 'Daily input tokens',
    daily_images: 'Daily images',
    daily: 'Daily requests',
    monthly: 'Monthly requests',
};

export const QUOTA_ORDER = ['weekly_input_tokens', 'daily_input_tokens', 'daily_images', 'daily', 'monthly'];

/** Quota buckets in display order, skipping unconfigured windows. */
export function quotaRows(subscription) {
    const buckets = subscription?.buckets ?? {};
    return QUOTA_ORDER.filter((k) => buckets[k]).map((k) => {
        const b = buckets[k];
        let frac = isNum(b.percent_used) ? b.percent_used : null;
        if (frac === null && isNum(b.used) && isNum(b.limit) && b.limit > 0) frac = b.used / b.limit;
        return { key: k, label: QUOTA_LABELS[k] ?? k, fraction: frac, bucket: b, tokens: k.includes('tokens') };
    });
}

export function isSubscriptionModel(entry) {
    return entry?.subscription?.included === true || (entry?.tiers ?? []).includes('subscription');
}

export function inputMultiplier(entry) {
    const m = entry?.subscription?.input_multiplier;
    return isNum(m) ? m : null;
}

/**
 * Filter catalogue entries the way the browser's toolbar describes. Capability flags only match when
 * NanoGPT stated them true: an unknown flag is not a yes.
 */
export function filterCatalog(models, f = {}) {
    const q = (f.q ?? '').trim().toLowerCase();
    const maxPrice = isNum(f.maxPrice) ? f.maxPrice : null;
    const minContext = isNum(f.minContext) ? f.minContext : null;
    return models.filter((m) => {
        if (!f.includeRouters && m.is_router) return false;
        if (q && !`${m.id} ${m.name ?? ''} ${m.vendor ?? ''}`.toLowerCase().includes(q)) return false;
        if (f.tier === 'subscription' && !isSubscriptionModel(m)) return false;
        if (f.tier === 'paid' && !((m.tiers ?? []).includes('paid') || m.subscription?.included === false)) return false;
        if (f.tier === 'personalized' && !(m.tiers ?? []).includes('personalized')) return false;
        const caps = m.capabilities ?? {};
        if (f.vision && caps.vision !== true) return false;
        if (f.reasoning && caps.reasoning !== true) return false;
        if (f.tools && caps.tool_calling !== true) return false;
        if (maxPrice !== null && !(isNum(m.pricing?.prompt) && m.pricing.prompt <= maxPrice)) return false;
        if (minContext !== null && !(isNum(m.context_length) && m.context_length >= minContext)) return false;
        return true;
    });
}

const collator = typeof Intl !== 'undefined' ? new Intl.Collator(undefined, { sensitivity: 'base', numeric: true }) : null;
function byName(a, b) {
    const x = a.name || a.id;
    const y = b.name || b.id;
    return collator ? collator.compare(x, y) : x.localeCompare(y);
}

/** Sorts a copy. Unknown prices/contexts go last whatever the direction, so they never hide good rows. */
export function sortCatalog(models, sort = 'name') {
    const list = models.slice();
    const last = (v) => (isNum(v) ? v : null);
    if (sort === 'price') {
        list.sort((a, b) => cmpNullLast(last(a.pricing?.prompt), last(b.pricing?.prompt), 1) || byName(a, b));
    } else if (sort === 'context') {
        list.sort((a, b) => cmpNullLast(last(a.context_length), last(b.context_length), -1) || byName(a, b));
    } else if (sort === 'newest') {
        list.sort((a, b) => cmpNullLast(last(a.created), last(b.created), -1) || byName(a, b));
    } else {
        list.sort(byName);
    }
    return list;
}

function cmpNullLast(a, b, dir) {
    if (a === null && b === null) return 0;
    if (a === null) return 1;
    if (b === null) return -1;
    return (a - b) * dir;
}

/**
 * Group thinking variants under their base when the base is in the same list; orphans stay top-level
 * (the base may be filtered out, and hiding the variant then would hide a real match).
 */
export function foldThinking(models) {
    const ids = new Set(models.map((m) => m.id));
    const variantsOf = new Map();
    const rows = [];
    for (const m of models) {
        if (m.thinking_base && ids.has(m.thinking_base)) {
            if (!variantsOf.has(m.thinking_base)) variantsOf.set(m.thinking_base, []);
            variantsOf.get(m.thinking_base).push(m);
        }
    }
    for (const m of models) {
        if (m.thinking_base && ids.has(m.thinking_base)) continue;
        rows.push({ entry: m, variants: variantsOf.get(m.id) ?? [] });
    }
    return rows;
}

/** Label suffix for ST's own <option>: price per 1M input/output and the subscription mark. */
export function enrichmentSuffix(entry) {
    if (!entry) return '';
    const parts = [];
    const p = entry.pricing ?? {};
    if (isNum(p.prompt) || isNum(p.completion)) parts.push(`${formatPrice(p.prompt)}/${formatPrice(p.completion)} per 1M`);
    if (isSubscriptionModel(entry)) {
        const mult = inputMultiplier(entry);
        parts.push(mult !== null && mult !== 1 ? `SUB x${mult}` : 'SUB');
    }
    return parts.length ? ` · ${parts.join(' · ')}` : '';
}

export function isNanoGptUrl(url) {
    try {
        const u = new URL(String(url ?? ''));
        return u.hostname === 'nano-gpt.com' || u.hostname.endsWith('.nano-gpt.com');
    } catch {
        return false;
    }
}

/** Which NanoGPT endpoint a base URL is (v1, subscription, ...), or null. */
export function endpointIdForUrl(url, endpoints) {
    if (!isNanoGptUrl(url)) return null;
    const norm = (s) => String(s).replace(/\/+$/, '');
    const hit = (endpoints ?? []).find((e) => norm(e.url) === norm(url));
    if (hit) return hit.id;
    // Text Completion's Generic type also works with https://nano-gpt.com/api (ST appends /v1 itself).
    return /^https:\/\/nano-gpt\.com\/api$/.test(norm(url)) ? 'v1' : null;
}

/**
 * SVG sparkline geometry. Returns the polyline path and each point's position so the view can add
 * hover targets. Null values break nothing: they are skipped.
 */
export function sparkline(values, width, height, pad = 2) {
    const pts = values.map((v, i) => ({ i, v })).filter((p) => isNum(p.v));
    if (pts.length === 0) return { path: '', points: [], min: null, max: null };
    const min = Math.min(...pts.map((p) => p.v));
    const max = Math.max(...pts.map((p) => p.v));
    const span = max - min || 1;
    const n = Math.max(1, values.length - 1);
    const points = pts.map((p) => ({
        x: round2(pad + (p.i / n) * (width - 2 * pad)),
        y: round2(height - pad - ((p.v - min) / span) * (height - 2 * pad)),
        v: p.v,
        i: p.i,
    }));
    const path = points.map((p, k) => `${k ? 'L' : 'M'}${p.x} ${p.y}`).join(' ');
    return { path, points, min, max };
}

function round2(x) {
    return Math.round(x * 100) / 100;
}

/**
 * Known provider error texts caused by message ordering, mapped to the Prompt Post-Processing mode that
 * fixes them. Order matters: the most specific pattern wins.
 */
export const FORMATTING_ERRORS = [
    { re: /first message must (?:use|be|have) (?:the )?user role|must start with (?:a )?user|first (?:non-system )?message must be (?:from )?(?:the )?user/i, ppp: 'strict', reason: 'The provider wants the prompt to start with a user message.' },
    { re: /system message(?:s)? (?:must|should|can only) (?:be )?(?:at the beginning|first)|system messages? (?:are )?only (?:allowed|supported) at the (?:beginning|start)/i, ppp: 'semi', reason: 'The provider only accepts a system message at the start.' },
    { re: /roles? must alternate|alternat(?:e|ing) (?:between )?user(?:\/| and )assistant|conversation roles must alternate/i, ppp: 'semi', reason: 'The provider wants user and assistant turns to alternate.' },
    { re: /consecutive (?:messages|roles) (?:with|of) the same role|duplicate consecutive/i, ppp: 'merge', reason: 'The provider rejects two messages in a row from the same role.' },
];

export function matchFormattingError(message) {
    const text = String(message ?? '');
    return FORMATTING_ERRORS.find((e) => e.re.test(text)) ?? null;
}

/** The "with tools" twin of a PPP mode, for ST versions and setups that use tool calling. */
export function pppWithTools(mode, toolsEnabled) {
    if (!toolsEnabled) return mode;
    return { merge: 'merge_tools', semi: 'semi_tools', strict: 'strict_tools' }[mode] ?? mode;
}

/** Thinking variant for a base id (catalogue link first; ":thinking" suffix as a last resort). */
export function thinkingTarget(modelId, byId, on) {
    const entry = byId.get(modelId);
    if (on) {
        if (entry?.thinking_base) return modelId; // already a variant
        const v = entry?.thinking_variants?.[0];
        if (v) return v;
        return byId.has(`${modelId}:thinking`) ? `${modelId}:thinking` : null;
    }
    if (entry?.thinking_base) return entry.thinking_base;
    const m = /^(.*?)(?::thinking(?::[\w-]+)?|-thinking)$/.exec(modelId);
    return m && byId.has(m[1]) ? m[1] : (entry ? modelId : null);
}

/** Debounce that also exposes flush/cancel, for refresh-after-generation bursts. */
export function debounce(fn, ms) {
    let timer = null;
    const wrapped = (...args) => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => {
            timer = null;
            fn(...args);
        }, ms);
    };
    wrapped.cancel = () => {
        if (timer) clearTimeout(timer);
        timer = null;
    };
    return wrapped;
}

/** Exponential backoff with jitter, capped. attempt starts at 0. */
export function backoffDelay(attempt, baseMs = 1000, capMs = 60000, random = Math.random) {
    const raw = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
    return Math.round(raw * (0.8 + 0.4 * random()));
}

/**
 * Whether a model id from NanoGPT's list can name a model at all. Junk rows (empty, spaces, line breaks,
 * control characters, absurd length) are hidden from the catalogue and from ST's own selects; the service
 * drops them by the same rule (nanogpt/schemas.py).
 */
export function isUsableModelId(id) {
    return typeof id === 'string' && id.length > 0 && id.length <= 200 && !/[\s\p{C}]/u.test(id);
}

/**
 * The model to use after a switch: the one in use when the new address lists it, else its thinking base,
 * else the closest listed model (same vendor, covered by the subscription for subscribers, most name parts in
 * common, e.g. "Derestricted-GLM-1.7" -> "Derestricted-GLM-3.8-32b", not a router or a thinking variant, newest
 * first), else the first listed. Returns {id, reason}.
 */
export function pickModel(previous, listed, byId, { subscriber = false } = {}) {
    const ids = (listed ?? []).filter(isUsableModelId);
    if (!ids.length) return { id: null, reason: 'none' };
    if (previous && ids.includes(previous)) return { id: previous, reason: 'same' };
    const prev = previous ? byId.get(previous) : null;
    const base = prev?.thinking_base ?? (previous ? previous.replace(/(?::thinking(?::[\w-]+)?|-thinking)$/, '') : null);
    if (base && base !== previous && ids.includes(base)) return { id: base, reason: 'base' };
    const vendor = prev?.vendor ?? (previous?.includes('/') ? previous.split('/')[0] : null);
    const parts = new Set(nameParts(previous));
    const rank = (id) => {
        const e = byId.get(id);
        return [
            vendor && (e?.vendor ?? id.split('/')[0]) === vendor ? 0 : 1,
            subscriber && e && !isSubscriptionModel(e) ? 1 : 0,
            -nameParts(id).filter((p) => parts.has(p)).length,
            e?.is_router ? 1 : 0,
            e?.thinking_base ? 1 : 0,
            -(e?.created ?? 0),
        ];
    };
    const ranked = ids.map((id) => [rank(id), id]).sort((a, b) => {
        for (let i = 0; i < a[0].length; i++) if (a[0][i] !== b[0][i]) return a[0][i] - b[0][i];
        return a[1].localeCompare(b[1]);
    });
    return { id: ranked[0][1], reason: 'closest' };
}

/** The words of a model id after its vendor ("ArliAI/Derestricted-GLM-1.7" -> derestricted, glm), versions left out. */
function nameParts(id) {
    const name = (id ?? '').includes('/') ? id.slice(id.indexOf('/') + 1) : (id ?? '');
    return [...new Set(name.toLowerCase().split(/[^a-z0-9]+/).filter((p) => p && !/^\d+$/.test(p)))];
}
