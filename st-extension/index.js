// NanoGPT Companion: SillyTavern UI extension entry. ST loads this file as an ES module after its
// settings are loaded; everything ST-specific goes through StAdapter, everything service-specific
// through ServiceClient, and the views only render.

import { AccountView } from './src/account-view.js';
import { CatalogCache, ownerKey } from './src/catalog-cache.js';
import { CatalogStore, CatalogView } from './src/catalog-view.js';
import { DoctorView } from './src/doctor-view.js';
import { EndpointSwitcher } from './src/endpoint-switcher.js';
import { SelectEnricher } from './src/enrich-selects.js';
import { debounce, escapeHtml, isNanoGptUrl } from './src/format.js';
import { ReplyNotices } from './src/reply-notice.js';
import { ServiceClient, STATUS } from './src/service-client.js';
import { registerSlashCommands } from './src/slash-commands.js';
import { StAdapter } from './src/st-adapter.js';

const VERSION = '0.1.0';
const ACCOUNT_REFRESH_AFTER_GENERATION_MS = 2500;
const DOCTOR_RECHECK_MS = 1500; // ST saves settings with a 1 s debounce; the service re-reads after that.
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
        this.account = new AccountView({ root, adapter });
        this.doctor = new DoctorView({ root, adapter, client: this.client, onChange: () => this.endpoints.render() });
        this.endpoints = new EndpointSwitcher({ root: root.querySelector('#ngc_endpoints'), adapter, onSwitched: () => this.scheduleDoctor() });
        this.enricher = new SelectEnricher({ adapter, store: this.store, settings: this.settings });
        this.replies = new ReplyNotices({
            adapter,
            client: this.client,
            store: this.store,
            settings: this.settings,
            saveSettings: () => adapter.saveSettings(),
            undoJournal: (ids) => this.doctor.undoJournal(ids),
        });

        this.bindSettings();
        this.account.ensureBadge(this.settings().show_badge);
        this.account.renderStatus(STATUS.CONNECTING);
        this.endpoints.render();
        this.doctor.render();
        this.enricher.attach();

        root.querySelector('#ngc_browse').addEventListener('click', () => this.openCatalog());
        root.querySelector('#ngc_sync').addEventListener('click', async () => adapter.toast('info', await this.sync()));

        this.refreshAccountSoon = debounce(() => this.refreshAccount(), ACCOUNT_REFRESH_AFTER_GENERATION_MS);
        this.scheduleDoctor = debounce(() => this.connected() && this.doctor.refresh(), DOCTOR_RECHECK_MS);
        adapter.on('GENERATION_ENDED', () => this.refreshAccountSoon()) || adapter.on('MESSAGE_RECEIVED', () => this.refreshAccountSoon());
        for (const key of ['OAI_PRESET_CHANGED_AFTER', 'CONNECTION_PROFILE_LOADED', 'CHATCOMPLETION_SOURCE_CHANGED']) {
            adapter.on(key, () => {
                this.scheduleDoctor();
                this.endpoints.render();
                this.enricher.apply();
            });
        }
        adapter.on('CHATCOMPLETION_MODEL_CHANGED', (model) => this.onModelChanged(model));
        adapter.observeErrorToasts((text) => {
            this.doctor.onGenerationError(text);
            if (this.connected()) this.replies.onGenerationError(text);
        });
        this.replies.attach();

        registerSlashCommands(this);
        document.addEventListener('visibilitychange', () => {
            if (document.visibilityState === 'visible' && this.client.status !== STATUS.CONNECTED) this.client.reconnectNow();
        });
        this.client.start();
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
        bind('ngc_show_badge', 'show_badge', (on) => this.account.ensureBadge(on));
        bind('ngc_enrich_selects', 'enrich_selects', () => this.enricher.apply());
        bind('ngc_only_subscription', 'only_subscription', () => this.enricher.apply());
        bind('ngc_apply_model_fixes', 'apply_model_fixes');
        bind('ngc_set_context', 'set_context_from_catalog');
        bind('ngc_reply_doctor', 'reply_doctor');
    }

    onStatus(status) {
        this.account.renderStatus(status, this.client.detail);
        if (status === STATUS.CONNECTED) this.loadAll();
    }

    async loadAll() {
        await Promise.allSettled([this.refreshAccount(), this.refreshHistory(), this.loadCatalog(), this.ensureEndpoints(true), this.doctor.refresh()]);
    }

    onEvent(name, data) {
        if (name === 'account') {
            this.account.renderAccount(data);
            this.refreshHistory();
        } else if (name === 'alert') {
            this.account.showAlert(data);
        } else if (name === 'catalog') {
            this.store.markNew(data?.diff?.added);
            this.loadCatalog();
        } else if (name === 'findings') {
            this.doctor.set(data?.findings ?? [], data);
        } else if (name === 'fix') {
            this.doctor.applyLiveFix(data).then((outcome) => this.replies.onLiveFix(data, outcome));
        }
    }

    async refreshAccount() {
        try {
            this.account.renderAccount(await this.client.call('/api/account'));
        } catch (err) {
            console.debug('[NanoGPT Companion] account refresh failed', err?.code);
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

    /** Revalidate the catalogue (the browser's cache asks the service: a 304 while unchanged); keep the
     * copy we show when its ETag is the same, else show and save the new one. */
    async loadCatalog() {
        await this.cacheRead;
        const owner = this.catalogOwner;
        let answer;
        let data = null;
        try {
            answer = await this.client.getCached(CATALOG_PATH);
            const same = this.store.loaded && answer.etag !== null && answer.etag === this.catalogEtag;
            if (!same) data = await answer.json();
        } catch (err) {
            console.debug('[NanoGPT Companion] catalogue load failed', err?.code ?? err?.message);
            return;
        }
        if (owner !== this.catalogOwner) return;
        if (data === null) {
            this.store.source = 'service'; // the saved copy is confirmed current
            this.renderCatalogSummary();
            return;
        }
        this.catalogEtag = answer.etag;
        this.showCatalog(data, 'service');
        if (answer.etag) this.cache.save(owner, answer.etag, data);
    }

    showCatalog(payload, source) {
        this.store.set(payload, source);
        this.enricher.apply();
        this.renderCatalogSummary();
        this.catalogView?.render();
    }

    renderCatalogSummary() {
        const t = (s) => this.adapter.t(s);
        const when = this.store.fetchedAt ? new Date(this.store.fetchedAt * 1000).toLocaleString() : '—';
        const notes = [this.store.stale ? t('stale') : '', this.store.source === 'cache' ? t('saved copy') : ''].filter(Boolean);
        const summary = this.root.querySelector('#ngc_catalog_summary');
        summary.textContent = `${this.store.models.length} ${t('models')} · ${t('updated')} ${when}${notes.map((n) => ` · ${n}`).join('')}`;
        summary.dataset.source = this.store.source ?? '';
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

    async sync() {
        try {
            const r = await this.client.call('/api/catalog/refresh', { method: 'POST', body: {} });
            this.store.markNew(r.diff?.added);
            await this.loadCatalog();
            const d = r.diff ?? {};
            return `Catalogue synced: ${r.count} models (+${d.added?.length ?? 0} added, -${d.removed?.length ?? 0} removed, ${d.changed?.length ?? 0} changed)`;
        } catch (err) {
            return `Sync failed: ${err.message}`;
        }
    }

    async openCatalog() {
        await this.ensureCatalog();
        const view = new CatalogView({
            store: this.store,
            adapter: this.adapter,
            initialSort: this.settings().catalog_sort,
            showVariants: this.settings().show_thinking_variants,
            onUse: (id, btn) => this.useModel(id, btn),
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

    async useModel(id, btn) {
        if (btn) btn.disabled = true;
        const r = await this.adapter.selectModel(id);
        if (btn) btn.disabled = false;
        if (r.ok) this.adapter.toast('success', `${this.adapter.t('Now using')} ${id}`);
        else this.adapter.toast('warning', r.message);
    }

    /** Per-model follow-ups: context size from the catalogue (Custom only, opt-in) and a doctor re-check. */
    onModelChanged(model) {
        this.endpoints.render();
        if (!this.settings().apply_model_fixes) return;
        this.scheduleDoctor();
        const src = this.adapter.activeSource();
        const entry = this.store.byId.get(model);
        if (this.settings().set_context_from_catalog && src.source === 'custom' && isNanoGptUrl(src.customUrl) && entry?.context_length) {
            this.adapter.applyPatchOp({ path: ['oai_settings', 'openai_max_context'], value: entry.context_length });
        }
    }
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
