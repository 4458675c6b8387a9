// NanoGPT Companion: SillyTavern UI extension entry. ST loads this file as an ES module after its
// settings are loaded; everything ST-specific goes through StAdapter, everything service-specific
// through ServiceClient, and the views only render.

import { AccountView } from './src/account-view.js';
import { CatalogCache, ownerKey, sameRepresentation } from './src/catalog-cache.js';
import { CatalogStore, CatalogView } from './src/catalog-view.js';
import { ConnectionFlow } from './src/connection-flow.js';
import { DoctorView } from './src/doctor-view.js';
import { EndpointSwitcher } from './src/endpoint-switcher.js';
import { SelectEnricher } from './src/enrich-selects.js';
import { debounce, escapeHtml } from './src/format.js';
import { ModelSync } from './src/model-sync.js';
import { PolicyView } from './src/policy-view.js';
import { SpendTracker } from './src/spend-tracker.js';
import { SpendView, registerSpendCommand } from './src/spend-view.js';
import { ReplyNotices } from './src/reply-notice.js';
import { ServiceClient, STATUS } from './src/service-client.js';
import { registerSlashCommands } from './src/slash-commands.js';
import { StAdapter } from './src/st-adapter.js';
import { describeChange } from './src/st-labels.js';
import { describeDiff, renderSyncChanges, summaryLine } from './src/sync-report.js';

const VERSION = '0.1.0';
const ACCOUNT_REFRESH_AFTER_GENERATION_MS = 2500;
const DOCTOR_RECHECK_MS = 1500; // ST saves settings with a 1 s debounce; the service re-reads after that.
const MODEL_FIELD_SETTLE_MS = 600; // typing a model id: follow up once the user paused
// The list projection (no descriptions: those load on demand) without router ids: what the views show.
const CATALOG_PATH = '/api/catalog?fields=summary&include_routers=false';

class CompanionApp {
    constructor() {
        this.adapter = new StAdapter(globalThis);
        this.store = new CatalogStore();
        this.cache = CatalogCache.open(globalThis);
        this.catalogOwner = null; // whose catalogue the store and the cache hold (service URL + token)
        this.catalogEtag = null; // the validator of the catalogue in the store
        this.cacheRead = Promise.resolve();
        this.endpointData = null;
        this.popupOpen = null;
        this.lastKeyStatus = null;
    }

    async init() {
        const adapter = this.adapter;
        adapter.capabilityReport();
        this.settings = () => adapter.settings();
        let html;
        try {
            html = await adapter.renderTemplate('drawer');
        } catch (err) {
            console.warn('[NanoGPT Companion] could not load the drawer template', err);
            return;
        }
        const root = adapter.mountDrawer(html);
        if (!root) {
            console.warn('[NanoGPT Companion] #extensions_settings not found; the extension cannot show its panel.');
            return;
        }
        this.root = root;
        const header = root.querySelector('.inline-drawer-header');
        header.addEventListener('keydown', (ev) => {
            if (ev.key === 'Enter' || ev.key === ' ') {
                ev.preventDefault();
                header.click();
            }
        });

        this.client = new ServiceClient({
            getRequestHeaders: () => adapter.ctx()?.getRequestHeaders?.() ?? {},
            onStatus: (s, d) => this.onStatus(s, d),
            onEvent: (n, d) => this.onEvent(n, d),
            onBootstrap: (info) => this.onBootstrap(info),
        });
        this.account = new AccountView({ root, adapter, onRefresh: () => this.refreshAccount({ force: true }) });
        this.policies = new PolicyView({ root, adapter, client: this.client, onChange: () => this.doctor.refresh() });
        this.doctor = new DoctorView({
            root,
            adapter,
            client: this.client,
            onChange: () => this.endpoints.render(),
            onMuted: (n) => this.policies.showMuted(n),
        });
        this.flow = new ConnectionFlow({
            adapter,
            client: this.client,
            store: this.store,
            settings: this.settings,
            isSubscriber: () => this.account.snapshot?.key_status === 'ok' && !!this.account.snapshot?.subscription?.active,
        });
        this.endpoints = new EndpointSwitcher({
            root: root.querySelector('#ngc_endpoints'),
            adapter,
            flow: this.flow,
            onSwitched: () => this.onConnectionChanged(),
        });
        this.enricher = new SelectEnricher({ adapter, store: this.store, settings: this.settings });
        this.modelSync = new ModelSync({ adapter, onReport: (r) => this.onModelSync(r) });
        await this.startSpend(root);
        this.replies = new ReplyNotices({
            adapter,
            client: this.client,
            store: this.store,
            settings: this.settings,
            saveSettings: () => adapter.saveSettings(),
            undoJournal: (ids) => this.doctor.undoJournal(ids),
        });

        this.bindSettings();
        this.account.renderStatus(STATUS.CONNECTING);
        this.updateInUse();
        this.endpoints.render();
        this.doctor.render();
        this.enricher.attach();

        root.querySelector('#ngc_browse').addEventListener('click', () => this.openCatalog());
        root.querySelector('#ngc_sync').addEventListener('click', () => this.sync());
        root.querySelector('#ngc_catalog_problem').addEventListener('click', (ev) => {
            if (ev.target.closest?.('button[data-act="retry-catalog"]')) this.retryCatalog();
        });

        this.refreshAccountSoon = debounce(() => this.refreshAccount(), ACCOUNT_REFRESH_AFTER_GENERATION_MS);
        this.scheduleDoctor = debounce(() => this.connected() && this.doctor.refresh(), DOCTOR_RECHECK_MS);
        this.connectionChangedSoon = debounce(() => this.onConnectionChanged(), 250);
        adapter.on('GENERATION_ENDED', () => this.refreshAccountSoon()) || adapter.on('MESSAGE_RECEIVED', () => this.refreshAccountSoon());
        for (const key of ['OAI_PRESET_CHANGED_AFTER', 'CONNECTION_PROFILE_LOADED', 'CHATCOMPLETION_SOURCE_CHANGED', 'MAIN_API_CHANGED']) {
            adapter.on(key, () => this.onConnectionChanged());
        }
        adapter.on('CHATCOMPLETION_MODEL_CHANGED', (model) => this.onModelChanged(model));
        this.watchStFields();
        adapter.observeErrorToasts((text) => void this.onGenerationError(text));
        this.replies.attach();

        registerSlashCommands(this);
        document.addEventListener('visibilitychange', () => {
            if (document.visibilityState === 'visible' && this.client.status !== STATUS.CONNECTED) this.client.reconnectNow();
        });
        this.client.start();
    }

    /** The Spend section and the generation tracker (src/spend-view.js, src/spend-tracker.js). */
    async startSpend(root) {
        this.spend = new SpendView({ host: root, adapter: this.adapter, client: this.client, account: this.account });
        try {
            await this.spend.mount();
        } catch (err) {
            console.warn('[NanoGPT Companion] could not load the spend section', err);
        }
        this.spendTracker = new SpendTracker({ adapter: this.adapter, client: this.client, onReported: () => this.spend.refreshSoon() });
        this.spendTracker.attach();
        registerSpendCommand(this.adapter, this.spend);
        this.adapter.on('CHAT_CHANGED', () => void this.spend.refreshSoon());
    }

    /**
     * ST fields whose handlers emit no event: the Custom and Generic addresses and the typed model ids
     * (typing into #custom_model_id only saves, public/scripts/openai.js; only choosing in
     * #model_custom_select emits CHATCOMPLETION_MODEL_CHANGED). Listening here keeps the badge, the
     * endpoint panel and the per-model follow-ups in step with what the user typed.
     */
    watchStFields() {
        const $ = this.adapter.$;
        if (!$) return;
        const typedModel = debounce(() => this.onModelChanged(this.adapter.currentModel()), MODEL_FIELD_SETTLE_MS);
        $(document).on('input.ngc', '#custom_api_url_text, #generic_api_url_text', () => this.connectionChangedSoon());
        $(document).on('change.ngc', '#textgen_type', () => this.connectionChangedSoon());
        $(document).on('input.ngc', '#custom_model_id, #generic_model_textgenerationwebui', () => typedModel());
    }

    /**
     * A failed generation's error toast gets one answer, not two: the notice at the end of the chat (its Fix
     * is journalled and undoable) when the formatting doctor explains it; else, with that doctor off or no
     * cause found, the Settings doctor's suggestion in the drawer.
     */
    async onGenerationError(text) {
        if (this.connected() && await this.replies.onGenerationError(text)) return;
        this.doctor.onGenerationError(text);
    }

    connected() {
        return this.client.status === STATUS.CONNECTED;
    }

    bindSettings() {
        const s = this.settings();
        const bind = (id, key, after) => {
            const el = this.root.querySelector(`#${id}`);
            el.checked = !!s[key];
            el.addEventListener('change', () => {
                this.settings()[key] = el.checked;
                this.adapter.saveSettings();
                after?.(el.checked);
            });
        };
        bind('ngc_show_badge', 'show_badge', () => this.updateInUse());
        bind('ngc_enrich_selects', 'enrich_selects', () => this.enricher.apply());
        bind('ngc_only_subscription', 'only_subscription', () => this.enricher.apply());
        bind('ngc_apply_model_fixes', 'apply_model_fixes');
        bind('ngc_set_context', 'set_context_from_catalog');
        bind('ngc_reply_doctor', 'reply_doctor');
    }

    /** The badge and the chat chip only while NanoGPT is the active connection. */
    updateInUse() {
        this.account.ensureBadge(this.settings().show_badge, this.adapter.nanoKind() !== null);
    }

    onConnectionChanged() {
        this.updateInUse();
        this.endpoints.render();
        this.enricher.apply();
        this.scheduleDoctor();
    }

    onStatus(status) {
        this.account.renderStatus(status, this.client.detail);
        if (status === STATUS.CONNECTED) this.loadAll();
    }

    async loadAll() {
        await Promise.allSettled([
            this.refreshAccount(),
            this.refreshHistory(),
            this.loadCatalog({ current: this.client.hello?.catalog_etag }),
            this.ensureEndpoints(true),
            this.doctor.refresh(),
            this.policies.refresh(),
            this.loadAlerts(),
            this.spend.refresh(),
            this.spendTracker.drain(),
        ]);
    }

    onEvent(name, data) {
        if (name === 'account') {
            this.onAccount(data);
            this.refreshHistory();
        } else if (name === 'alert') {
            this.showAlerts([data]);
            this.spend.onAlert(data);
        } else if (name === 'spend') {
            this.spend.refreshSoon();
        } else if (name === 'catalog') {
            this.onCatalogEvent(data);
        } else if (name === 'findings') {
            this.doctor.set(data?.findings ?? [], data);
        } else if (name === 'fix') {
            this.doctor.applyLiveFix(data).then((outcome) => this.replies.onLiveFix(data, outcome));
        }
    }

    onAccount(snap) {
        this.account.renderAccount(snap);
        // The recommendation depends on the account; never leave one standing on a key NanoGPT refused.
        if (snap?.key_status !== this.lastKeyStatus) {
            this.lastKeyStatus = snap?.key_status ?? null;
            this.ensureEndpoints(true);
        }
    }

    /** Alerts the service kept while no tab was open, then each new one: shown once, then marked seen. */
    async loadAlerts() {
        try {
            const data = await this.client.call('/api/alerts');
            await this.showAlerts(data.alerts ?? []);
        } catch (err) {
            console.debug('[NanoGPT Companion] alerts unavailable', err?.code);
        }
        this.root.dataset.alertsChecked = String(Date.now()); // when this page last took its alerts
    }

    async showAlerts(alerts) {
        const shown = alerts.filter((a) => this.account.showAlert(a)).map((a) => a.id);
        if (!shown.length) return;
        try {
            await this.client.call('/api/alerts/seen', { method: 'POST', body: { ids: shown } });
        } catch (err) {
            console.debug('[NanoGPT Companion] could not mark alerts seen', err?.code);
        }
    }

    /** `force`: ask NanoGPT now (the refresh button, /nano-balance); the service rate-limits it. */
    async refreshAccount({ force = false } = {}) {
        try {
            this.onAccount(await this.client.call(force ? '/api/account?refresh=1' : '/api/account'));
        } catch (err) {
            console.debug('[NanoGPT Companion] account refresh failed', err?.code);
            if (force) this.adapter.toast('warning', `${this.adapter.t('Balance not refreshed')}: ${err.message}`);
        }
    }

    async refreshHistory() {
        try {
            const data = await this.client.call('/api/account/history?days=7');
            this.account.renderHistory(data.points ?? []);
        } catch (err) {
            console.debug('[NanoGPT Companion] history refresh failed', err?.code);
        }
    }

    /** The token file was read: show this user's cached catalogue at once, before the service answers. */
    onBootstrap(info) {
        const owner = ownerKey(info.url, info.token);
        if (owner === this.catalogOwner) return;
        this.catalogOwner = owner;
        this.catalogEtag = null;
        this.cacheRead = this.cache.load(owner).then((rec) => {
            // The service may have answered first, or another user's token arrived meanwhile.
            if (!rec || owner !== this.catalogOwner || this.store.source === 'service') return;
            this.catalogEtag = rec.etag;
            this.showCatalog(rec.payload, 'cache');
        });
    }

    /**
     * Revalidate the catalogue (the browser's cache asks the service: a 304 while unchanged); keep the
     * copy we show when its ETag is the same, else show and save the new one. `current`: the ETag the
     * service's hello named for this list on connecting; when the copy shown is that one, there is nothing
     * to ask (an unchanged catalogue costs no request at all; a later change comes as a `catalog` event).
     */
    async loadCatalog({ current = null } = {}) {
        await this.cacheRead;
        const owner = this.catalogOwner;
        const shown = (etag) => this.store.loaded && sameRepresentation(etag, this.catalogEtag);
        if (current && shown(current)) return this.confirmCatalog();
        let answer;
        let data = null;
        try {
            answer = await this.client.getCached(CATALOG_PATH);
            if (!shown(answer.etag)) data = await answer.json();
        } catch (err) {
            console.debug('[NanoGPT Companion] catalogue load failed', err?.code ?? err?.message);
            if (owner !== this.catalogOwner) return;
            // Say why (a saved copy may still be shown), instead of an empty or silently old list.
            this.store.error = { code: err.code, message: err.message };
            this.renderCatalogSummary(err);
            this.catalogView?.render();
            return;
        }
        if (owner !== this.catalogOwner) return;
        if (data === null) return this.confirmCatalog();
        this.catalogEtag = answer.etag;
        this.showCatalog(data, 'service');
        if (answer.etag) this.cache.save(owner, answer.etag, data);
    }

    /** The copy shown (saved, or loaded earlier) is the service's current one. */
    confirmCatalog() {
        this.store.source = 'service';
        this.store.error = null;
        this.renderCatalogSummary();
    }

    showCatalog(payload, source) {
        this.store.set(payload, source);
        this.enricher.apply();
        this.renderCatalogSummary();
        this.catalogView?.render();
    }

    /**
     * The summary line (count, last sync, stale, saved copy, hidden junk rows) and, when the catalogue could
     * not be loaded, why: "NanoGPT cannot be reached; last sync never", with a retry.
     */
    renderCatalogSummary(failed = null) {
        const t = (s) => this.adapter.t(s);
        const summary = this.root.querySelector('#ngc_catalog_summary');
        const problem = this.root.querySelector('#ngc_catalog_problem');
        const when = this.store.fetchedAt ? new Date(this.store.fetchedAt * 1000).toLocaleString() : t('never');
        if (this.store.loaded) {
            const notes = [
                this.store.stale ? t('stale') : '',
                this.store.source === 'cache' ? t('saved copy') : '',
                this.store.hidden ? `${this.store.hidden} ${t('unusable entries hidden')}` : '',
            ].filter(Boolean);
            summary.textContent = `${this.store.models.length} ${t('models')} · ${t('synced')} ${when}${notes.map((n) => ` · ${n}`).join('')}`;
        } else {
            summary.textContent = `${t('No catalogue yet')} · ${t('last sync')} ${when}`;
        }
        summary.dataset.source = this.store.source ?? '';
        const empty = !this.store.loaded || !this.store.models.length;
        if (failed || (this.store.stale && this.store.loaded)) {
            const reason = failed?.message ?? this.store.staleReason ?? '';
            const head = failed && empty
                ? `${t(problemHeadline(failed.code))}; ${t('last sync')} ${when}.`
                : `${t('Showing the catalogue from')} ${when}; ${t('the last refresh did not complete')}:`;
            problem.innerHTML = `<p><strong>${escapeHtml(head)}</strong></p>${reason ? `<p class="ngc-small">${escapeHtml(reason)}</p>` : ''}
                <button type="button" class="menu_button ngc-small-btn" data-act="retry-catalog">${escapeHtml(t('Retry'))}</button>`;
            problem.hidden = false;
        } else {
            problem.hidden = true;
            problem.innerHTML = '';
        }
    }

    async retryCatalog() {
        const r = await this.sync();
        if (!r.ok) await this.loadCatalog();
    }

    async ensureCatalog() {
        if (!this.store.loaded) await this.loadCatalog();
    }

    async ensureEndpoints(force = false) {
        if (this.endpointData && !force) return;
        try {
            this.endpointData = await this.client.call('/api/endpoints');
            this.endpoints.set(this.endpointData);
        } catch (err) {
            console.debug('[NanoGPT Companion] endpoints load failed', err?.code);
        }
    }

    /** "Sync now": refresh the catalogue, show what changed in the panel. Returns {ok, text}. */
    async sync() {
        const btn = this.root.querySelector('#ngc_sync');
        if (btn) btn.disabled = true;
        try {
            const before = new Map(this.store.byId);
            const r = await this.client.call('/api/catalog/refresh', { method: 'POST', body: {} });
            const report = await this.afterCatalogChange(r.diff ?? {}, before);
            return { ok: true, text: `${this.adapter.t('Catalogue synced')}: ${r.count} ${this.adapter.t('models')} (${summaryLine(report)})` };
        } catch (err) {
            this.store.error = { code: err.code, message: err.message };
            this.renderCatalogSummary(err);
            return { ok: false, text: `${this.adapter.t('Sync failed')}: ${err.message}` };
        } finally {
            if (btn) btn.disabled = false;
        }
    }

    /** A refresh the service made by itself (SSE `catalog`): the same report, and ST's own list follows. */
    async onCatalogEvent(data) {
        await this.afterCatalogChange(data?.diff ?? {}, new Map(this.store.byId));
    }

    /**
     * Measured against what this tab had: a service that restarted reports its first load as "everything
     * added", which is news to nobody here; a tab that had nothing yet just loads.
     */
    async afterCatalogChange(serviceDiff, before) {
        const known = before.size > 0;
        const diff = {
            added: (serviceDiff.added ?? []).filter((id) => !before.has(id)),
            removed: (serviceDiff.removed ?? []).filter((id) => before.has(id)),
            changed: serviceDiff.changed ?? [],
        };
        if (known) this.store.markNew(diff.added);
        await this.loadCatalog();
        if (!known) return describeDiff({}, before, this.store.byId);
        const report = describeDiff(diff, before, this.store.byId, this.adapter.currentModel());
        this.lastSync = { report, when: new Date().toLocaleTimeString(), stNote: null };
        if (!report.empty) this.renderSyncChanges();
        if (diff.added?.length || diff.removed?.length) {
            this.modelSync.onCatalogChange(diff);
            if (report.currentRemoved) this.doctor.refresh();
        }
        return report;
    }

    renderSyncChanges() {
        const s = this.lastSync;
        if (!s) return;
        renderSyncChanges(this.root.querySelector('#ngc_sync_changes'), s.report, { t: (x) => this.adapter.t(x), when: s.when, stNote: s.stNote });
    }

    /** ST's own list was brought in step (or could not be): say so under the sync report. */
    onModelSync(result) {
        if (this.lastSync) {
            this.lastSync.stNote = result.note;
            this.renderSyncChanges();
        }
        this.enricher.apply();
        if (result.refreshed) this.adapter.toast('info', result.note, this.adapter.t('NanoGPT models'));
        if (result.selectedRemoved) this.doctor.refresh();
    }

    async openCatalog() {
        await this.ensureCatalog();
        const view = new CatalogView({
            store: this.store,
            adapter: this.adapter,
            initialSort: this.settings().catalog_sort,
            showVariants: this.settings().show_thinking_variants,
            currentModel: () => this.adapter.currentModel(),
            onUse: (id, btn) => this.useModel(id, btn),
            onRetry: () => this.retryCatalog(),
            call: (path) => this.client.call(path),
            loadDetails: (id) => this.client.call(`/api/catalog/model?id=${encodeURIComponent(id)}`),
        });
        this.catalogView = view;
        const el = view.build();
        const done = this.adapter.popup(el);
        requestAnimationFrame(() => el.querySelector('input[data-f="q"]')?.focus());
        await done;
        this.settings().catalog_sort = view.filters.sort;
        this.settings().show_thinking_variants = view.showVariants;
        this.adapter.saveSettings();
        this.catalogView = null;
    }

    /**
     * "Use" from the catalogue (and /nano-thinking): the model of the API that is active (Text Completion's
     * model when Text Completion is active), then the per-model follow-ups (context size from the catalogue).
     */
    async useModel(id, btn, { quiet = false } = {}) {
        if (btn) btn.disabled = true;
        const r = await this.adapter.selectModel(id);
        if (btn) btn.disabled = false;
        if (r.ok) {
            const extra = this.applyCatalogContext(id);
            if (!quiet) this.adapter.toast('success', `${this.adapter.t('Now using')} ${id}${extra ? ` · ${extra}` : ''}`);
            this.catalogView?.render();
            this.endpoints.render();
            this.scheduleDoctor();
        } else if (!quiet) {
            this.adapter.toast('warning', r.message ?? `${id}: ${this.adapter.t('not selected')}`);
        }
        return r;
    }

    /**
     * "Set context size from the catalogue" (opt-in): Custom's and Text Completion's context slider follow
     * the model's context (clamped to the slider's range). The built-in source sets it by itself.
     */
    applyCatalogContext(model) {
        if (!this.settings().set_context_from_catalog) return null;
        const kind = this.adapter.nanoKind();
        const entry = this.store.byId.get(model);
        if (!entry?.context_length || (kind !== 'chat' && kind !== 'text')) return null;
        const path = kind === 'text' ? ['max_context'] : ['oai_settings', 'openai_max_context'];
        const sel = kind === 'text' ? '#max_context' : '#openai_max_context';
        const slider = document.querySelector(sel);
        const max = Number(slider?.max) || entry.context_length;
        const value = Math.min(entry.context_length, max);
        const before = kind === 'text' ? this.adapter.ctx()?.maxContext : this.adapter.readPath(path);
        if (before === value) return null;
        this.adapter.setControl(sel, value, 'input');
        return describeChange(path, before, value);
    }

    /** Per-model follow-ups: context size from the catalogue (opt-in) and a doctor re-check. */
    onModelChanged() {
        this.endpoints.render();
        this.catalogView?.render();
        if (!this.settings().apply_model_fixes) return;
        this.scheduleDoctor();
        const model = this.adapter.currentModel();
        if (model) this.applyCatalogContext(model);
    }
}

/** Why there is no catalogue, by the service's error code: unreachable is not the same as refused. */
function problemHeadline(code) {
    if (code === 'key_rejected') return 'NanoGPT rejected the API key';
    if (code === 'rate_limited') return 'NanoGPT is limiting requests right now';
    if (code === 'upstream_malformed') return 'NanoGPT sent an unreadable answer';
    if (code === 'not_connected' || code === 'unreachable') return 'The companion service cannot be reached';
    return 'NanoGPT cannot be reached';
}

const app = new CompanionApp();
// A small, namespaced handle for users' scripts and diagnostics; no ST state lives here.
globalThis.nanogptCompanion = Object.freeze({
    version: VERSION,
    status: () => app.client?.status ?? STATUS.CONNECTING,
    reconnect: () => app.client?.reconnectNow(),
    repliesChecked: () => app.replies?.checked ?? 0,
});

function start() {
    app.init().catch((err) => console.warn('[NanoGPT Companion] failed to start:', escapeHtml(err?.message ?? String(err))));
}

if (globalThis.jQuery) globalThis.jQuery(start);
else start();
