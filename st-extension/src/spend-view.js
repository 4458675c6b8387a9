// The drawer's Spend section (template spend.html, styles spend.css): this chat, today, this month, budgets,
// a 30-day chart per day stacked by model, top chats and characters, the chat's generations, CSV export
// and the budget settings; plus /nano-spend. Subscribers see quota used where others see dollars.

import { debounce, escapeHtml, formatPercent } from './format.js';
import {
    formatCost, formatQuota, isApproximate, pipeValue, stackedBars, totalText,
} from './spend-format.js';

const REFRESH_DEBOUNCE_MS = 400;
const CHART_W = 300;
const CHART_H = 80;
const SERIES_COLORS = 9;
const OUTSIDE = 'Outside SillyTavern';

export class SpendView {
    constructor({ host, adapter, client, account, now = () => Date.now() }) {
        this.host = host;
        this.adapter = adapter;
        this.client = client;
        this.account = account;
        this.now = now;
        this.t = (s) => adapter.t(s);
        this.data = null;
        this.root = null;
        this.zoneSent = false;
        this.refreshSoon = debounce(() => this.refresh(), REFRESH_DEBOUNCE_MS);
    }

    /** Insert the section after the balance (its own template) and load its styles once. */
    async mount() {
        const html = await this.adapter.renderTemplate('spend');
        const wrap = document.createElement('div');
        wrap.innerHTML = html;
        const section = wrap.firstElementChild;
        const after = this.host.querySelector('#ngc_account');
        if (after) after.after(section);
        else this.host.querySelector('.inline-drawer-content')?.append(section);
        this.root = section;
        if (!document.getElementById('ngc_spend_css')) {
            const link = document.createElement('link');
            link.id = 'ngc_spend_css';
            link.rel = 'stylesheet';
            link.href = new URL('../spend.css', import.meta.url).href;
            document.head.append(link);
        }
        this.q('#ngc_spend_refresh').addEventListener('click', () => this.refresh());
        this.q('#ngc_spend_export').addEventListener('click', () => this.exportCsv());
        this.q('#ngc_spend_save').addEventListener('click', () => this.saveSettings());
        this.q('#ngc_spend_recent_box').addEventListener('toggle', () => this.loadRecent());
        return section;
    }

    q(sel) {
        return this.root.querySelector(sel);
    }

    chatId() {
        return this.adapter.chatContext().chatId;
    }

    async refresh() {
        if (!this.root) return null;
        const chat = this.chatId();
        try {
            const data = await this.client.call(`/api/spend?days=30${chat ? `&chat_id=${encodeURIComponent(chat)}` : ''}`);
            this.render(data);
            await this.showAlerts(data.alerts ?? []);
            await this.syncZone(data.settings?.timezone);
            if (this.q('#ngc_spend_recent_box').open) await this.loadRecent();
            return data;
        } catch (err) {
            console.debug('[NanoGPT Companion] spend refresh failed', err?.code);
            return null;
        }
    }

    render(data) {
        this.data = data;
        const quota = data.mode === 'quota';
        const mode = this.q('#ngc_spend_mode');
        mode.hidden = !quota;
        mode.textContent = quota ? this.t('quota') : '';
        mode.title = quota ? this.t('Your subscription covers most generations: figures are quota used (input tokens), plus dollars where something was billed.') : '';
        this.stat('chat', data.chat, data.chat_id ? null : this.t('No chat open'));
        this.stat('today', data.today);
        this.stat('month', data.month);
        this.renderBudgets(data.budgets ?? {});
        const notes = [];
        const pending = data.today?.pending ?? 0;
        if (pending) notes.push(`${pending} ${this.t(pending === 1 ? 'generation waits for NanoGPT\'s balance to be read again.' : 'generations wait for NanoGPT\'s balance to be read again.')}`);
        if (data.window?.outside_usd > 0 || data.window?.outside_quota > 0) {
            const outside = quota && data.window.outside_quota > 0 ? formatQuota(data.window.outside_quota, data.quota) : formatCost(data.window.outside_usd);
            notes.push(`${this.t('Used outside SillyTavern (another app on this key?), last 30 days')}: ${outside}`);
        }
        this.q('#ngc_spend_note').textContent = notes.join(' ');
        this.renderChart(data);
        this.renderTop('#ngc_spend_top_chats', data.top_chats ?? [], data);
        this.renderTop('#ngc_spend_top_characters', data.top_characters ?? [], data);
    }

    stat(name, totals, empty = null) {
        const box = this.root.querySelector(`.ngc-stat[data-stat="${name}"]`);
        const value = box.querySelector('strong');
        const approx = isApproximate(totals);
        box.dataset.approx = String(approx);
        value.textContent = totals ? totalText(totals, this.data.mode, this.data.quota) : (empty ?? '—');
        const parts = [];
        if (totals) {
            parts.push(`${totals.generations} ${this.t('generations')}`);
            if (totals.estimated_usd > 0) parts.push(`${this.t('estimated')}: ${formatCost(totals.estimated_usd)}`);
            if (totals.approximate) parts.push(this.t('includes shares of changes several generations caused together'));
        }
        box.title = parts.join(' · ');
    }

    renderBudgets(budgets) {
        const rows = [['daily', 'Daily budget'], ['monthly', 'Monthly budget']]
            .map(([key, label]) => [budgets[key], label])
            .filter(([b]) => b && b.budget_usd !== null && b.budget_usd !== undefined);
        this.q('#ngc_spend_budgets').innerHTML = rows.map(([b, label]) => {
            const f = Math.max(0, Math.min(1, b.fraction ?? 0));
            const level = b.fraction >= 1 ? 'full' : b.fraction >= 0.8 ? 'high' : 'ok';
            return `<div class="ngc-quota-row" data-budget="${escapeHtml(label)}">
                <div class="ngc-quota-head"><span>${escapeHtml(this.t(label))}</span>
                <span class="ngc-small">${b.estimated ? '~' : ''}${escapeHtml(formatCost(b.spent_usd))} / ${escapeHtml(formatCost(b.budget_usd))} · ${escapeHtml(formatPercent(b.fraction))}</span></div>
                <div class="ngc-bar" role="progressbar" aria-label="${escapeHtml(this.t(label))}" aria-valuemin="0" aria-valuemax="100"
                    aria-valuenow="${Math.round(f * 100)}" data-level="${level}"><div class="ngc-bar-fill" style="width:${(f * 100).toFixed(1)}%"></div></div>
            </div>`;
        }).join('');
    }

    renderChart(data) {
        const quota = data.mode === 'quota';
        const key = quota ? 'quota' : 'usd';
        const series = data.models ?? [];
        const days = data.days ?? [];
        const { columns, max } = stackedBars(days, series, { width: CHART_W, height: CHART_H, key });
        const box = this.q('#ngc_spend_chart');
        const fmt = (v) => (quota ? formatQuota(v, data.quota) : formatCost(v));
        if (!(max > 0)) {
            box.innerHTML = `<div class="ngc-muted ngc-small">${escapeHtml(this.t('No NanoGPT generations in the last 30 days yet.'))}</div>`;
            this.q('#ngc_spend_legend').innerHTML = '';
            return;
        }
        const color = (i) => `var(--ngc-series-${Math.min(i, SERIES_COLORS - 1)})`;
        const label = (c) => {
            const parts = c.segments.slice().reverse().map((s) => `${s.name}: ${fmt(s.value)}`);
            return `${c.date}: ${fmt(c.total)}${parts.length ? ` (${parts.join(', ')})` : ''}`;
        };
        const peak = columns.reduce((a, c) => (c.total > a.total ? c : a), columns[0]);
        box.innerHTML = `<svg class="ngc-spend-chart" viewBox="0 0 ${CHART_W} ${CHART_H}" preserveAspectRatio="none" role="img"
                aria-label="${escapeHtml(this.t('Spend per day'))}: ${escapeHtml(fmt(data.window?.[key]))}; ${escapeHtml(this.t('highest'))} ${escapeHtml(fmt(peak.total))} (${escapeHtml(peak.date)})">
            <line class="ngc-axis" x1="0" y1="${CHART_H - 1}" x2="${CHART_W}" y2="${CHART_H - 1}" vector-effect="non-scaling-stroke"/>
            ${columns.map((c) => `<g class="ngc-col" data-date="${escapeHtml(c.date)}" data-label="${escapeHtml(label(c))}">
                <rect class="ngc-col-hit" x="${c.x}" y="0" width="${c.w}" height="${CHART_H}"/>
                ${c.segments.map((s) => `<rect class="ngc-seg" data-series="${escapeHtml(s.name)}" x="${s.x}" y="${s.y}" width="${s.w}" height="${s.h}" fill="${color(s.series)}"/>`).join('')}
                <title>${escapeHtml(label(c))}</title></g>`).join('')}
        </svg>`;
        const out = this.q('#ngc_spend_chart_value');
        const svg = box.querySelector('svg');
        const show = (ev) => {
            const g = ev.target.closest?.('.ngc-col');
            if (g) out.textContent = g.dataset.label;
        };
        svg.addEventListener('mouseover', show);
        svg.addEventListener('mouseleave', () => { out.textContent = ''; });
        this.q('#ngc_spend_legend').innerHTML = series.map((s, i) => `<li><span class="ngc-swatch" style="--ngc-series-color:${color(i)}"></span>${escapeHtml(s === 'other' ? this.t('other models') : s === OUTSIDE ? this.t(OUTSIDE) : s)}</li>`).join('');
    }

    renderTop(sel, entries, data) {
        const list = this.q(sel);
        if (!entries.length) {
            list.innerHTML = `<li class="ngc-muted ngc-small">${escapeHtml(this.t('nothing yet'))}</li>`;
            return;
        }
        list.innerHTML = entries.map((e) => `<li data-key="${escapeHtml(e.key)}"><span class="ngc-top-row">
            <span class="ngc-top-label" title="${escapeHtml(e.label)}">${escapeHtml(e.label)}</span>
            <span class="ngc-top-value">${isApproximate(e) ? '~' : ''}${escapeHtml(totalText(e, data.mode, data.quota))}</span></span></li>`).join('');
    }

    /** The open chat's generations, newest first: measured cost beside the price estimate. */
    async loadRecent() {
        const box = this.q('#ngc_spend_recent_box');
        if (!box.open) return;
        const list = this.q('#ngc_spend_recent');
        const chat = this.chatId();
        if (!chat) {
            list.innerHTML = `<li class="ngc-muted ngc-small">${escapeHtml(this.t('No chat open'))}</li>`;
            return;
        }
        try {
            const { rows } = await this.client.call(`/api/spend/generations?limit=20&chat_id=${encodeURIComponent(chat)}`);
            const quota = this.data?.mode === 'quota';
            // In a group chat each reply is a member's: say whose (a one-character chat needs no name).
            const who = (r) => (r.group_id && r.character ? `${escapeHtml(r.character)} · ` : '');
            list.innerHTML = rows.length ? rows.map((r) => {
                const measured = quota && r.channel === 'quota' ? r.measured_quota : r.measured_usd;
                const estimate = quota && r.channel === 'quota' ? r.estimate_quota : r.estimate_usd;
                const fmt = (v) => (quota && r.channel === 'quota' ? formatQuota(v, this.data?.quota) : formatCost(v));
                const surprise = measured > 0 && estimate > 0 && (measured / estimate > 2 || measured / estimate < 0.5);
                const state = r.status === 'pending' ? this.t('measuring…') : r.status === 'unmeasured' ? this.t('not measured') : fmt(measured);
                const bits = [`${this.t('estimate')} ${fmt(estimate)}${r.per_request ? ` (${this.t('per request')})` : ''}`];
                if (r.approximate) bits.push(`${this.t('shared with')} ${r.shared_with - 1}`);
                const title = [surprise ? this.t('The measured cost differs from the price estimate more than twofold (a price change, a per-request price, cached or hidden tokens?)') : null,
                    r.note, r.kind, r.outcome !== 'ok' ? r.outcome : null].filter(Boolean).join(' · ');
                return `<li data-row="${r.id}" data-status="${escapeHtml(r.status)}" data-surprise="${surprise}" title="${escapeHtml(title)}">
                    <span class="ngc-top-row"><span class="ngc-top-label">${r.message_id !== null ? `#${r.message_id} ` : ''}${who(r)}${escapeHtml(r.model ?? '')}</span>
                    <span class="ngc-top-value">${r.approximate ? '~' : ''}${escapeHtml(state)}</span></span>
                    <span class="ngc-small ngc-muted">${escapeHtml(bits.join(' · '))}</span></li>`;
            }).join('') : `<li class="ngc-muted ngc-small">${escapeHtml(this.t('No NanoGPT generations in this chat yet.'))}</li>`;
        } catch (err) {
            console.debug('[NanoGPT Companion] spend rows failed', err?.code);
        }
    }

    /** Budget alerts no tab has shown yet (raised while no tab was open): shown, then marked seen. */
    async showAlerts(alerts) {
        for (const alert of alerts) this.account.showAlert(alert);
        if (alerts.length) await this.markSeen(alerts.map((a) => a.id));
    }

    /** A budget alert arrived over the event stream (the caller toasts it): it counts as shown. */
    onAlert(alert) {
        if (String(alert?.kind ?? '').startsWith('budget_') && alert.id) this.markSeen([alert.id]);
    }

    async markSeen(ids) {
        try {
            await this.client.call('/api/spend/alerts/seen', { method: 'POST', body: { ids } });
        } catch (err) {
            console.debug('[NanoGPT Companion] could not mark alerts seen', err?.code);
        }
    }

    /** The browser's zone decides where "today" starts; the service keeps it per user. */
    async syncZone(current) {
        if (this.zoneSent) return;
        this.zoneSent = true;
        const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
        if (zone && zone !== current) {
            try {
                await this.client.call('/api/spend/settings', { method: 'PUT', body: { timezone: zone } });
                this.refreshSoon();
            } catch (err) {
                console.debug('[NanoGPT Companion] time zone not accepted', err?.code);
            }
        }
        this.fillSettings(this.data?.settings);
    }

    fillSettings(s) {
        if (!s) return;
        this.q('#ngc_budget_daily').value = s.daily_budget_usd ?? '';
        this.q('#ngc_budget_monthly').value = s.monthly_budget_usd ?? '';
        this.q('#ngc_retention').value = s.retention_days ?? 365;
    }

    async saveSettings() {
        const read = (sel) => {
            const raw = this.q(sel).value.trim();
            return raw === '' ? null : Number(raw);
        };
        const body = {
            daily_budget_usd: read('#ngc_budget_daily') || null,
            monthly_budget_usd: read('#ngc_budget_monthly') || null,
            retention_days: Math.round(read('#ngc_retention') ?? 365),
        };
        const out = this.q('#ngc_spend_saved');
        try {
            this.fillSettings(await this.client.call('/api/spend/settings', { method: 'PUT', body }));
            out.textContent = this.t('Saved.');
            await this.refresh();
        } catch (err) {
            out.textContent = `${this.t('Not saved')}: ${err.message}`;
        }
    }

    async exportCsv() {
        try {
            const text = await this.client.text('/api/spend/export.csv?days=3650');
            const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
            const a = document.createElement('a');
            a.href = url;
            a.download = `nanogpt-spend-${new Date(this.now()).toISOString().slice(0, 10)}.csv`;
            document.body.append(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 10000);
        } catch (err) {
            this.adapter.toast('warning', `${this.t('Export failed')}: ${err.message}`);
        }
    }

    /** /nano-spend: a sentence shown as ST's own commands show theirs (a toast), a number to pipe. */
    async command(value, named) {
        const which = spendPeriod(value);
        if (!which) {
            // ST reads named arguments only before the unnamed one ("/nano-spend quiet=true chat").
            this.adapter.toast('warning', `/nano-spend: ${this.t('expected chat, today or month, got')} "${value}"`);
            return '';
        }
        const data = await this.refresh();
        if (!data) {
            this.adapter.toast('warning', this.t('The companion service is not connected.'));
            return '';
        }
        const totals = data[which];
        const label = { chat: this.t('This chat'), today: this.t('Today'), month: this.t('This month') }[which];
        let sentence;
        if (!totals) sentence = `${label}: ${this.t('no chat open')}`;
        else {
            const approx = isApproximate(totals) ? '~' : '';
            sentence = `${label}: ${approx}${totalText(totals, data.mode, data.quota)} (${totals.generations} ${this.t('NanoGPT generations')})`;
        }
        const format = String(named?.format ?? 'number');
        if (String(named?.quiet ?? 'false') !== 'true') this.adapter.toast('info', sentence);
        if (format === 'json') return JSON.stringify({ period: which, mode: data.mode, ...(totals ?? {}) });
        if (format === 'text') return sentence;
        return pipeValue(totals, data.mode);
    }
}

/** The period /nano-spend was asked for: nothing means today; null for anything else. */
export function spendPeriod(value) {
    const word = String(value ?? '').trim().toLowerCase();
    if (!word) return 'today';
    return ['chat', 'today', 'month'].includes(word) ? word : null;
}

export function registerSpendCommand(adapter, view) {
    return adapter.registerSlashCommand({
        name: 'nano-spend',
        helpString: 'Shows what NanoGPT cost for <code>chat</code> (the open chat), <code>today</code> (default) or <code>month</code> (from NanoGPT Companion). Returns the amount in USD (quota tokens for subscribers) to pipe on; <code>format=text</code> returns the sentence, <code>format=json</code> the totals; <code>quiet=true</code> shows no toast (named arguments go first). Examples: <code>/nano-spend month | /echo</code>, <code>/nano-spend quiet=true chat</code>',
        args: [{ description: 'chat, today or month', required: false, enumList: ['chat', 'today', 'month'] }],
        namedArgs: [
            { name: 'format', description: 'number (default), text or json', enumList: ['number', 'text', 'json'], defaultValue: 'number' },
            { name: 'quiet', description: 'do not show the toast', type: 'BOOLEAN', enumList: ['true', 'false'], defaultValue: 'false' },
        ],
        returns: 'amount (USD, or quota tokens for subscribers)',
        callback: (value, named) => view.command(value, named),
    });
}
