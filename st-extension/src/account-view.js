// Balance, subscription quota, history sparkline, status pill, compact badge, the balance chip shown while
// chatting, the key state (rejected, missing) with "Check again", and alert toasts.
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
    constructor({ root, adapter, now = () => Date.now(), onRefresh = null, onOpen = null }) {
        this.root = root;
        this.adapter = adapter;
        this.now = now;
        this.onRefresh = onRefresh;
        this.onOpen = onOpen ?? (() => adapter.openOwnDrawer());
        this.chip = null;
        this.nextRefreshAt = null;
        this.refreshing = false;
        this.cooldownTimer = null;
        this.root.querySelector('#ngc_refresh')?.addEventListener('click', () => this.requestRefresh());
        this.root.querySelector('#ngc_key_state')?.addEventListener('click', (ev) => {
            if (ev.target.closest?.('button[data-act="check-again"]')) this.requestRefresh();
        });
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
        this.pillText = viaPlugin ? this.t('connected via ST plugin')
            : refusedHost ? this.t('address not allowed') : this.t(STATUS_TEXT[status] ?? status);
        this.pillTitle = viaPlugin
            ? this.t('Connected through the NanoGPT Companion server plugin inside SillyTavern.')
            : (status === STATUS.CONNECTED ? this.t('Connected directly to the companion service on this machine.') : '');
        this.renderPill();
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
        if (snap && 'next_refresh_at' in snap) this.nextRefreshAt = snap.next_refresh_at ? snap.next_refresh_at * 1000 : null;
        const bal = snap?.balance ?? {};
        const usd = this.q('#ngc_usd');
        usd.textContent = formatUsd(bal.usd);
        // Low balance is shown on the balance itself (colour and icon), not only in a toast.
        const low = snap?.low_balance === true;
        usd.classList.toggle('ngc-low', low);
        usd.title = low ? `${this.t('Below your alert threshold of')} ${formatUsd(snap.low_balance_usd)}` : '';
        this.q('#ngc_low_icon').hidden = !low;
        this.q('#ngc_xno').textContent = formatXno(bal.xno);
        const sub = snap?.subscription;
        const keyOk = snap?.key_status === 'ok';
        // A subscription is only claimed from data NanoGPT just confirmed.
        let subText;
        if (!keyOk) subText = this.t('unknown');
        else if (!sub) subText = this.t('none');
        else subText = sub.active ? this.t('active') : this.t(sub.state || 'inactive');
        if (keyOk && snap?.stale && sub?.active) subText = `${this.t('active')} (${this.t('last known')})`;
        const subEl = this.q('#ngc_sub_state');
        subEl.textContent = subText;
        subEl.dataset.state = keyOk ? (sub?.active ? 'active' : 'inactive') : 'unknown';
        const notes = [];
        if (snap?.stale && keyOk) notes.push(this.t('Showing last known values') + (snap.error?.message ? `: ${snap.error.message}` : '.'));
        if (sub?.degraded) notes.push(this.t('NanoGPT could not look up the quota counters right now.'));
        if (sub?.recommended_mode === 'paygo') notes.push(this.t('NanoGPT currently routes requests as pay-as-you-go') + (sub.routing_reason ? ` (${sub.routing_reason})` : '.'));
        this.q('#ngc_account_note').textContent = notes.join(' ');
        this.renderKeyState(snap);
        this.renderPill();
        this.renderQuota(keyOk ? sub : null);
        this.renderUpdated();
        this.renderBadge();
    }

    /**
     * The header pill: the service connection, unless NanoGPT refuses the key (or there is none). A green
     * "connected" above a useless key reads as "all is well", so the pill names the key problem instead
     * (data-status stays the service's; data-key carries the key's state).
     */
    renderPill() {
        const pill = this.q('#ngc_status_pill');
        if (!pill) return;
        const connected = this.status === STATUS.CONNECTED;
        const snap = this.snapshot;
        const key = connected ? snap?.key_status : null;
        const problem = { rejected: this.t('key rejected'), missing: this.t('no API key') }[key];
        // The service answers but NanoGPT does not (or fails): the values below are the last known ones.
        const upstream = connected && !problem && (snap?.stale || key === 'error') && snap?.error
            ? (snap.error.code === 'upstream_unavailable' ? 'unreachable' : 'failing')
            : null;
        if (upstream) pill.dataset.upstream = upstream;
        else delete pill.dataset.upstream;
        if (problem) {
            pill.dataset.key = key;
            pill.textContent = problem;
            pill.title = `${this.pillTitle ?? ''} ${key === 'rejected' ? this.t('NanoGPT rejected your API key: see Balance below.') : this.t('SillyTavern has no NanoGPT API key: see Balance below.')}`.trim();
        } else if (upstream) {
            delete pill.dataset.key;
            pill.textContent = upstream === 'unreachable' ? this.t('NanoGPT unreachable') : this.t('NanoGPT error');
            pill.title = `${this.t('The companion service runs, but its last call to NanoGPT failed')}: ${snap.error.message ?? snap.error.code}. ${this.t('Balance and quota show the last known values; they update by themselves once NanoGPT answers.')}`;
        } else {
            delete pill.dataset.key;
            pill.textContent = this.pillText ?? pill.textContent;
            pill.title = this.pillTitle ?? '';
        }
    }

    /** The key's state in plain words: what happened, when, and what to do; "Check again" asks NanoGPT now. */
    renderKeyState(snap) {
        const box = this.q('#ngc_key_state');
        if (!box) return;
        const when = snap?.checked_at ? new Date(snap.checked_at * 1000).toLocaleString() : null;
        let html = '';
        if (snap?.key_status === 'rejected') {
            html = `<p><strong>${escapeHtml(this.t('NanoGPT rejected your API key'))}</strong>${when ? ` (${escapeHtml(this.t('checked'))} ${escapeHtml(when)})` : ''}.</p>`
                + `<p class="ngc-small">${escapeHtml(this.t('The key may be revoked or mistyped. Put a working key in SillyTavern (API Connections → NanoGPT → NanoGPT API Key): the balance is checked again by itself when the key changes. Balance, quota and subscription are unknown until then.'))}</p>`;
        } else if (snap?.key_status === 'missing') {
            html = `<p><strong>${escapeHtml(this.t('No NanoGPT API key in SillyTavern'))}</strong></p>`
                + `<p class="ngc-small">${escapeHtml(this.t('Add it under API Connections (Chat Completion → NanoGPT → NanoGPT API Key). The balance appears by itself once it is saved.'))}</p>`;
        } else if (snap?.key_status === 'error') {
            html = `<p><strong>${escapeHtml(this.t('NanoGPT cannot be reached'))}</strong>${when ? ` (${escapeHtml(this.t('tried'))} ${escapeHtml(when)})` : ''}: ${escapeHtml(snap.error?.message ?? '')}</p>`;
        }
        if (html) html += `<button type="button" class="menu_button ngc-small-btn" data-act="check-again">${escapeHtml(this.t('Check again'))}</button>`;
        box.innerHTML = html;
        box.hidden = !html;
        box.dataset.keyStatus = snap?.key_status ?? '';
    }

    /** "Updated 14:02" beside the refresh button, which waits out NanoGPT's rate limit visibly. */
    renderUpdated() {
        const el = this.q('#ngc_updated');
        const btn = this.q('#ngc_refresh');
        if (!el || !btn) return;
        const s = this.snapshot;
        const at = s?.fetched_at ?? s?.checked_at;
        el.textContent = at ? `${this.t('updated')} ${new Date(at * 1000).toLocaleTimeString()}` : '';
        const wait = this.nextRefreshAt ? Math.ceil((this.nextRefreshAt - this.now()) / 1000) : 0;
        btn.disabled = this.refreshing || wait > 0;
        btn.title = wait > 0 ? `${this.t('Can refresh again in')} ${wait}s` : this.t('Ask NanoGPT for the balance now');
        clearTimeout(this.cooldownTimer);
        if (wait > 0) this.cooldownTimer = setTimeout(() => this.renderUpdated(), Math.min(wait, 5) * 1000);
    }

    async requestRefresh() {
        if (!this.onRefresh || this.refreshing) return;
        this.refreshing = true;
        this.renderUpdated();
        this.q('#ngc_refresh')?.classList.add('ngc-spinning');
        try {
            await this.onRefresh();
        } finally {
            this.refreshing = false;
            this.q('#ngc_refresh')?.classList.remove('ngc-spinning');
            this.renderUpdated();
        }
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

    /**
     * Each alert id is shown once per page; the service keeps every alert until a tab reports it shown, so
     * one that fired while ST was closed still reaches the user. A quota or balance *error* is a warning
     * toast here: ST's red toasts mean "SillyTavern failed", and this is news about the account.
     */
    showAlert(alert) {
        if (!alert?.id || this.seenAlerts.has(alert.id)) return false;
        this.seenAlerts.add(alert.id);
        const level = { error: 'warning', warning: 'warning', info: 'info' }[alert.level] ?? 'info';
        this.adapter.toast(level, alert.message ?? alert.kind, this.t('NanoGPT account'));
        return true;
    }

    /**
     * The badge (API Connections panel) and the chip (beside ST's chat input) exist only while NanoGPT is the
     * active connection (built-in source, or a NanoGPT address in Custom / Text Completion Generic); both
     * open this drawer when clicked. ``show`` is the user's setting.
     */
    ensureBadge(show, inUse = true) {
        this.badgeWanted = show;
        const wanted = show && inUse;
        if (!wanted) {
            this.badge?.remove();
            this.chip?.remove();
            this.badge = null;
            this.chip = null;
            return;
        }
        if (!this.badge) {
            const el = this.clickable(document.createElement('div'), 'ngc_badge', 'ngc-badge');
            if (this.adapter.mountBadge(el)) this.badge = el;
        }
        if (!this.chip) {
            const chip = this.clickable(document.createElement('div'), 'ngc_chat_balance', 'ngc-chip');
            if (this.adapter.mountChatChip(chip)) this.chip = chip;
        }
        this.renderBadge();
    }

    clickable(el, id, cls) {
        el.id = id;
        el.className = cls;
        el.setAttribute('role', 'button');
        el.setAttribute('aria-label', this.t('NanoGPT balance: open NanoGPT Companion'));
        el.tabIndex = 0;
        el.addEventListener('click', () => this.onOpen());
        el.addEventListener('keydown', (ev) => {
            if (ev.key === 'Enter' || ev.key === ' ') {
                ev.preventDefault();
                this.onOpen();
            }
        });
        return el;
    }

    renderBadge() {
        const s = this.snapshot;
        const low = s?.low_balance === true;
        const weekly = quotaRows(s?.subscription).find((r) => r.key === 'weekly_input_tokens') ?? quotaRows(s?.subscription)[0];
        const showSub = s?.key_status === 'ok' && s?.subscription?.active && weekly;
        const waiting = this.status !== STATUS.CONNECTED && !s;
        const usdText = s?.key_status === 'rejected' ? this.t('key rejected') : s?.key_status === 'missing' ? this.t('no key') : formatUsd(s?.balance?.usd);
        for (const el of [this.badge, this.chip]) {
            if (!el) continue;
            el.dataset.status = this.status;
            el.dataset.low = String(low);
            el.dataset.keyStatus = s?.key_status ?? '';
        }
        if (this.badge) {
            if (waiting) {
                this.badge.innerHTML = `<span class="ngc-badge-name">NanoGPT</span> <span class="ngc-muted">${escapeHtml(this.t(STATUS_TEXT[this.status] ?? ''))}</span>`;
            } else {
                const parts = [`<span class="ngc-badge-name">NanoGPT</span>`, `<strong class="ngc-badge-usd">${low ? '<span class="fa-solid fa-triangle-exclamation" aria-hidden="true"></span> ' : ''}${escapeHtml(usdText)}</strong>`];
                if (showSub) parts.push(`<span class="ngc-badge-sub" title="${escapeHtml(this.t(weekly.label))}">SUB ${escapeHtml(formatPercent(weekly.fraction))}</span>`);
                if (s?.stale || this.status !== STATUS.CONNECTED) parts.push(`<span class="ngc-muted" title="${escapeHtml(this.t('last known values'))}">⧗</span>`);
                this.badge.innerHTML = parts.join(' ');
            }
        }
        if (this.chip) {
            // Compact: the balance (and the weekly quota for subscribers) in one short line beside the input.
            const title = [`NanoGPT ${usdText}`, showSub ? `${this.t(weekly.label)} ${formatPercent(weekly.fraction)}` : '', low ? this.t('low balance') : '']
                .filter(Boolean).join(' · ');
            this.chip.title = title;
            this.chip.innerHTML = waiting
                ? '<span class="ngc-chip-usd ngc-muted">NanoGPT…</span>'
                : `${low ? '<span class="fa-solid fa-triangle-exclamation" aria-hidden="true"></span>' : ''}<span class="ngc-chip-usd">${escapeHtml(usdText)}</span>${showSub ? `<span class="ngc-chip-sub">${escapeHtml(formatPercent(weekly.fraction))}</span>` : ''}`;
        }
    }

    summary() {
        const s = this.snapshot;
        if (!s) return this.t('No account data yet.');
        if (s.key_status === 'rejected') return this.t('NanoGPT rejected your API key; balance unknown.');
        if (s.key_status === 'missing') return this.t('No NanoGPT API key in SillyTavern; balance unknown.');
        const bits = [`${formatUsd(s.balance?.usd)}`, `${formatXno(s.balance?.xno)}`];
        const sub = s.subscription;
        if (sub?.active) {
            const rows = quotaRows(sub).map((r) => `${this.t(r.label).toLowerCase()} ${formatPercent(r.fraction)}`);
            bits.push(`subscription active${rows.length ? ` (${rows.join(', ')})` : ''}`);
        } else {
            bits.push('no active subscription');
        }
        if (s.low_balance) bits.push('low balance');
        if (s.stale) bits.push('stale');
        return bits.join(' | ');
    }
}
