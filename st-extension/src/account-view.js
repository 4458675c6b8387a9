// Balance, subscription quota, history sparkline, status pill, compact badge and alert toasts.
// Owns only the extension's own DOM; ST is reached through the adapter.

import {
    START_COMMAND, escapeHtml, formatCountdown, formatPercent, formatTokens, formatUsd, formatXno, quotaRows, sparkline,
} from './format.js';
import { STATUS } from './service-client.js';

const STATUS_TEXT = {
    [STATUS.CONNECTING]: 'connecting…',
    [STATUS.CONNECTED]: 'connected',
    [STATUS.NOT_RUNNING]: 'service not running',
    [STATUS.TOKEN_REJECTED]: 'token rejected',
    [STATUS.TOO_OLD]: 'service too old',
};

export class AccountView {
    constructor({ root, adapter, now = () => Date.now() }) {
        this.root = root;
        this.adapter = adapter;
        this.now = now;
        this.t = (s) => adapter.t(s);
        this.snapshot = null;
        this.seenAlerts = new Set();
        this.badge = null;
        this.status = STATUS.CONNECTING;
    }

    q(sel) {
        return this.root.querySelector(sel);
    }

    renderStatus(status, detail = {}) {
        this.status = status;
        const pill = this.q('#ngc_status_pill');
        pill.dataset.status = status;
        // Which path carries the calls matters when something breaks (phone vs. this machine), so the
        // pill says it instead of hiding it in the console.
        const viaPlugin = status === STATUS.CONNECTED && detail.via === 'plugin';
        if (status === STATUS.CONNECTED && detail.via) pill.dataset.via = detail.via;
        else delete pill.dataset.via;
        const refusedHost = status === STATUS.NOT_RUNNING && detail.reason === 'bad_host';
        pill.textContent = viaPlugin ? this.t('connected via ST plugin')
            : refusedHost ? this.t('address not allowed') : this.t(STATUS_TEXT[status] ?? status);
        pill.title = viaPlugin
            ? this.t('Connected through the NanoGPT Companion server plugin inside SillyTavern.')
            : (status === STATUS.CONNECTED ? this.t('Connected directly to the companion service on this machine.') : '');
        const msg = this.q('#ngc_status_message');
        let html = '';
        if (refusedHost) {
            html = `<p>${escapeHtml(this.t('The companion\'s SillyTavern plugin does not answer pages opened as'))} <code>${escapeHtml(detail.host)}</code> ${escapeHtml(this.t('(a guard against DNS rebinding). Open SillyTavern by its IP address, or add this name to hostWhitelist.hosts in SillyTavern\'s config.yaml and restart SillyTavern.'))}</p>`;
        } else if (status === STATUS.NOT_RUNNING) {
            html = `<p>${escapeHtml(this.t('The NanoGPT Companion service is not running. Start it on the machine that runs SillyTavern:'))}</p>`
                + `<code class="ngc-command" tabindex="0">${escapeHtml(START_COMMAND)}</code>`
                + `<p class="ngc-small ngc-muted">${escapeHtml(this.t('This panel reconnects by itself once the service is up.'))}</p>`;
        } else if (status === STATUS.TOKEN_REJECTED) {
            html = `<p>${escapeHtml(this.t('The service rejected this browser\'s token. Restart the service (it rewrites the token file), then reload SillyTavern.'))}</p>`;
        } else if (status === STATUS.TOO_OLD) {
            html = `<p>${escapeHtml(this.t('The companion service is too old for this extension. Update it:'))} <code>pip install -U nanogpt-companion</code></p>`
                + `<p class="ngc-small ngc-muted">${escapeHtml(this.t('Service version'))}: ${escapeHtml(detail.version ?? '?')}</p>`;
        }
        if (this.adapter.missing.length) {
            html += `<p class="ngc-small">${escapeHtml(this.t('This SillyTavern lacks'))}: ${escapeHtml(this.adapter.missing.join(', '))}. ${escapeHtml(this.t('Some features are off.'))}</p>`;
        }
        msg.innerHTML = html;
        msg.hidden = !html;
        if (status === STATUS.CONNECTED) this.everConnected = true;
        this.root.classList.toggle('ngc-offline', status !== STATUS.CONNECTED);
        // Until the service has answered once, its panels would only show dashes: hide them.
        this.root.classList.toggle('ngc-never-connected', !this.everConnected);
        this.renderBadge();
    }

    renderAccount(snap) {
        this.snapshot = snap;
        const bal = snap?.balance ?? {};
        this.q('#ngc_usd').textContent = formatUsd(bal.usd);
        this.q('#ngc_xno').textContent = formatXno(bal.xno);
        const sub = snap?.subscription;
        this.q('#ngc_sub_state').textContent = sub ? (sub.active ? this.t('active') : this.t(sub.state || 'inactive')) : this.t('none');
        const notes = [];
        if (snap?.key_status === 'missing') notes.push(this.t('No NanoGPT API key found: add one in SillyTavern\'s API connections (NanoGPT).'));
        if (snap?.key_status === 'rejected') notes.push(this.t('NanoGPT rejected the API key.'));
        if (snap?.stale) notes.push(this.t('Showing last known values') + (snap.error?.message ? `: ${snap.error.message}` : '.'));
        if (sub?.degraded) notes.push(this.t('NanoGPT could not look up the quota counters right now.'));
        if (sub?.recommended_mode === 'paygo') notes.push(this.t('NanoGPT currently routes requests as pay-as-you-go') + (sub.routing_reason ? ` (${sub.routing_reason})` : '.'));
        this.q('#ngc_account_note').textContent = notes.join(' ');
        this.renderQuota(sub);
        this.renderBadge();
    }

    renderQuota(sub) {
        const box = this.q('#ngc_quota');
        const rows = quotaRows(sub);
        if (!rows.length) {
            box.innerHTML = '';
            return;
        }
        const now = this.now();
        box.innerHTML = rows.map((r) => {
            const pct = r.fraction === null ? null : Math.max(0, Math.min(1, r.fraction));
            const b = r.bucket;
            const fmt = r.tokens ? formatTokens : (n) => (typeof n === 'number' ? String(n) : '—');
            const used = sub.degraded ? this.t('unknown') : `${fmt(b.used)} / ${fmt(b.limit)}`;
            const reset = formatCountdown(b.reset_at, now);
            const level = pct === null ? 'unknown' : pct >= 1 ? 'full' : pct >= 0.8 ? 'high' : 'ok';
            return `<div class="ngc-quota-row" data-quota="${escapeHtml(r.key)}">
                <div class="ngc-quota-head"><span>${escapeHtml(this.t(r.label))}</span>
                <span class="ngc-small">${escapeHtml(used)} · ${escapeHtml(formatPercent(r.fraction))}${reset ? ` · ${escapeHtml(reset === 'now' ? this.t('resets now') : `${this.t('resets in')} ${reset}`)}` : ''}</span></div>
                <div class="ngc-bar" role="progressbar" aria-label="${escapeHtml(this.t(r.label))}" aria-valuemin="0" aria-valuemax="100"
                    aria-valuenow="${pct === null ? '' : Math.round(pct * 100)}" data-level="${level}">
                    <div class="ngc-bar-fill" style="width:${pct === null ? 0 : (pct * 100).toFixed(1)}%"></div></div>
            </div>`;
        }).join('');
    }

    renderHistory(points) {
        const box = this.q('#ngc_history');
        const values = (points ?? []).map((p) => (typeof p.usd === 'number' ? p.usd : null));
        const W = 280;
        const H = 48;
        const geo = sparkline(values, W, H, 4);
        if (geo.points.length < 2) {
            // One point is not a trend; say so rather than draw an empty chart.
            box.innerHTML = `<div class="ngc-muted ngc-small ngc-history-empty">${escapeHtml(this.t('Not enough history yet: the chart fills in as your balance changes.'))}</div>`;
            return;
        }
        const label = (p) => {
            const t = points[p.i]?.t;
            const when = typeof t === 'number' ? new Date(t * 1000).toLocaleString() : '';
            return `${formatUsd(p.v)}${when ? ` · ${when}` : ''}`;
        };
        box.innerHTML = `<svg class="ngc-spark" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img"
                aria-label="${escapeHtml(this.t('Balance history'))}: ${escapeHtml(formatUsd(geo.min))} – ${escapeHtml(formatUsd(geo.max))}">
            <path d="${geo.path}" class="ngc-spark-line" fill="none" vector-effect="non-scaling-stroke"/>
            ${geo.points.map((p) => `<circle class="ngc-spark-pt" cx="${p.x}" cy="${p.y}" r="6" data-label="${escapeHtml(label(p))}" tabindex="0"><title>${escapeHtml(label(p))}</title></circle>`).join('')}
        </svg>`;
        const out = this.q('#ngc_history_value');
        const show = (ev) => {
            const l = ev.target?.dataset?.label;
            if (l) out.textContent = l;
        };
        const svg = box.querySelector('svg');
        svg.addEventListener('mouseover', show);
        svg.addEventListener('focusin', show);
        svg.addEventListener('mouseleave', () => { out.textContent = ''; });
    }

    /** Each alert id is shown once per page; the service also sends each id once, this guards reconnects. */
    showAlert(alert) {
        if (!alert?.id || this.seenAlerts.has(alert.id)) return false;
        this.seenAlerts.add(alert.id);
        const level = { error: 'error', warning: 'warning', info: 'info' }[alert.level] ?? 'info';
        this.adapter.toast(level, alert.message ?? alert.kind);
        return true;
    }

    ensureBadge(show) {
        if (!show) {
            this.badge?.remove();
            this.badge = null;
            return;
        }
        if (this.badge) return;
        const el = document.createElement('div');
        el.id = 'ngc_badge';
        el.className = 'ngc-badge';
        el.setAttribute('role', 'status');
        el.setAttribute('aria-label', this.t('NanoGPT balance'));
        el.tabIndex = 0;
        if (this.adapter.mountBadge(el)) this.badge = el;
        this.renderBadge();
    }

    renderBadge() {
        const el = this.badge;
        if (!el) return;
        el.dataset.status = this.status;
        if (this.status !== STATUS.CONNECTED && !this.snapshot) {
            el.innerHTML = `<span class="ngc-badge-name">NanoGPT</span> <span class="ngc-muted">${escapeHtml(this.t(STATUS_TEXT[this.status] ?? ''))}</span>`;
            return;
        }
        const s = this.snapshot;
        const parts = [`<span class="ngc-badge-name">NanoGPT</span>`, `<strong class="ngc-badge-usd">${escapeHtml(formatUsd(s?.balance?.usd))}</strong>`];
        const weekly = quotaRows(s?.subscription).find((r) => r.key === 'weekly_input_tokens') ?? quotaRows(s?.subscription)[0];
        if (s?.subscription?.active && weekly) {
            parts.push(`<span class="ngc-badge-sub" title="${escapeHtml(this.t(weekly.label))}">SUB ${escapeHtml(formatPercent(weekly.fraction))}</span>`);
        }
        if (s?.stale || this.status !== STATUS.CONNECTED) parts.push(`<span class="ngc-muted" title="${escapeHtml(this.t('last known values'))}">⧗</span>`);
        el.innerHTML = parts.join(' ');
    }

    summary() {
        const s = this.snapshot;
        if (!s) return this.t('No account data yet.');
        const bits = [`${formatUsd(s.balance?.usd)}`, `${formatXno(s.balance?.xno)}`];
        const sub = s.subscription;
        if (sub?.active) {
            const rows = quotaRows(sub).map((r) => `${this.t(r.label).toLowerCase()} ${formatPercent(r.fraction)}`);
            bits.push(`subscription active${rows.length ? ` (${rows.join(', ')})` : ''}`);
        } else {
            bits.push('no active subscription');
        }
        if (s.stale) bits.push('stale');
        return bits.join(' | ');
    }
}
