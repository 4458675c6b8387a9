// Pure helpers of the spend view and tracker: no DOM, no ST, no network (unit-testable anywhere).

import { formatTokens, isNanoGptUrl } from './format.js';

// NanoGPT base path (below /api) -> the endpoint id the service knows.
const BASES = {
    'v1': 'v1',
    'subscription/v1': 'subscription',
    'paid/v1': 'paid',
    'personalized/v1': 'personalized',
    'v1legacy': 'v1legacy',
    'v1thinking': 'v1thinking',
};

function isNum(n) {
    return typeof n === 'number' && Number.isFinite(n);
}

/** Which NanoGPT base a URL is ("v1", "subscription", ...); null for another host or an unknown path. */
export function endpointFromUrl(url) {
    if (!isNanoGptUrl(url)) return null;
    try {
        const path = new URL(String(url)).pathname.replace(/\/+$/, '').replace(/\/(chat\/)?completions$/, '');
        const m = /^\/api\/(.+)$/.exec(path);
        return m ? BASES[m[1]] ?? null : null;
    } catch {
        return null;
    }
}

/**
 * Where a request ST is about to send goes, from the data of ST's *_SETTINGS_READY event; null when it
 * does not go to NanoGPT. Chat Completion: the built-in NanoGPT source (ST sends it to /api/v1) or the
 * Custom source at a NanoGPT URL; Text Completion: the Generic type at a NanoGPT URL.
 */
export function nanoGptTarget(kind, data, textSettings) {
    if (!data || typeof data !== 'object') return null;
    const model = typeof data.model === 'string' ? data.model : '';
    if (kind === 'chat') {
        const billing = data.nanogpt_payg_override ? 'paygo' : null;
        if (data.chat_completion_source === 'nanogpt') return { source: 'nanogpt', endpoint: 'v1', model, billing };
        if (data.chat_completion_source === 'custom' && isNanoGptUrl(data.custom_url)) {
            return { source: 'custom', endpoint: endpointFromUrl(data.custom_url), model, billing: null };
        }
        return null;
    }
    const type = data.api_type ?? textSettings?.type;
    const url = data.api_server ?? textSettings?.server_urls?.[type];
    if (type !== 'generic' || !isNanoGptUrl(url)) return null;
    return { source: 'textgen', endpoint: endpointFromUrl(url), model: model || textSettings?.generic_model || '', billing: null };
}

/**
 * The texts of a prompt ST sends (each chat message, or the text prompt), for counting tokens with ST's
 * tokenizer; never sent on. Per message, because ST counted each message already while it built the
 * prompt, so its token cache answers most of them.
 */
export function promptParts(kind, data) {
    if (kind !== 'chat') return typeof data?.prompt === 'string' ? [data.prompt] : [];
    const parts = [];
    for (const m of Array.isArray(data?.messages) ? data.messages : []) {
        if (typeof m?.content === 'string') parts.push(m.content);
        else if (Array.isArray(m?.content)) {
            for (const c of m.content) if (typeof c?.text === 'string') parts.push(c.text);
        }
    }
    return parts.filter(Boolean);
}

/** An id for a report: random, 8-64 of [A-Za-z0-9_.:-] (crypto.randomUUID is missing off https). */
export function generationId(random = Math.random, now = Date.now) {
    if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
    const hex = Array.from({ length: 16 }, () => Math.floor(random() * 16).toString(16)).join('');
    return `g-${now().toString(36)}-${hex}`;
}

/** USD with enough digits for cents and fractions of a cent ($0.0042). */
export function formatCost(usd) {
    if (!isNum(usd)) return '—';
    if (usd === 0) return '$0';
    const abs = Math.abs(usd);
    if (abs >= 100) return `$${usd.toFixed(0)}`;
    if (abs >= 1) return `$${usd.toFixed(2)}`;
    if (abs >= 0.01) return `$${usd.toFixed(3)}`;
    return `$${Number(usd.toPrecision(2))}`;
}

/** Quota use as tokens (or requests, on old plans), with the share of the plan's window when the limit is known. */
export function formatQuota(tokens, quota) {
    if (!isNum(tokens)) return '—';
    const unit = quota?.unit === 'requests' ? ' req' : ' tokens';
    const text = quota?.unit === 'requests' ? String(Math.round(tokens)) : formatTokens(tokens);
    if (isNum(quota?.limit) && quota.limit > 0) {
        const pct = (tokens / quota.limit) * 100;
        return `${text}${unit} (${pct < 0.1 && pct > 0 ? '<0.1' : Math.round(pct * 10) / 10}%)`;
    }
    return `${text}${unit}`;
}

/** The headline of a total in the user's mode: quota for subscribers (and USD beside it when spent). */
export function totalText(t, mode, quota) {
    if (!t) return '—';
    if (mode === 'quota') {
        const usd = t.usd > 0 ? ` + ${formatCost(t.usd)}` : '';
        return `${formatQuota(t.quota, quota)}${usd}`;
    }
    return formatCost(t.usd);
}

/** "~" marks a figure that is partly estimated or split from a shared change. */
export function isApproximate(t) {
    return !!t && (t.approximate || t.estimated_usd > 0 || t.pending > 0);
}

/** The number /nano-spend returns for piping: USD, or quota tokens in quota mode. */
export function pipeValue(t, mode) {
    if (!t) return '0';
    const v = mode === 'quota' ? t.quota : t.usd;
    return String(isNum(v) ? Math.round(v * 1e8) / 1e8 : 0);
}

/**
 * Stacked bars for the per-day chart: one column per day, one segment per series (model) in the
 * order given, heights scaled to the tallest day. Returns segments with their geometry and values.
 */
export function stackedBars(days, series, { width, height, pad = 2, key = 'usd' }) {
    const n = days.length || 1;
    const field = key === 'quota' ? 'quota_by_model' : 'usd_by_model';
    const totals = days.map((d) => series.reduce((sum, s) => sum + (d[field]?.[s] ?? 0), 0));
    const max = Math.max(0, ...totals);
    const slot = (width - 2 * pad) / n;
    const barWidth = Math.max(1, slot * 0.72);
    const columns = days.map((d, i) => {
        let y = height - pad;
        const x = pad + i * slot + (slot - barWidth) / 2;
        const segments = [];
        for (const [si, s] of series.entries()) {
            const v = d[field]?.[s] ?? 0;
            if (!(v > 0) || max <= 0) continue;
            const h = Math.max(0.5, (v / max) * (height - 2 * pad));
            y -= h;
            segments.push({ series: si, name: s, value: v, x: round2(x), y: round2(y), w: round2(barWidth), h: round2(h) });
        }
        return { date: d.date, total: totals[i], x: round2(x), w: round2(barWidth), segments };
    });
    return { columns, max };
}

function round2(x) {
    return Math.round(x * 100) / 100;
}
