// The one-click endpoint switch, as a whole journey: after the click ST has the key in the slot that
// connection reads (copied by the service, never through this page), the NanoGPT address, a model list
// fetched by ST's own Connect, a model that exists on that endpoint, the context size, and a connected
// status. Every step is reported in ST's words, and what cannot be completed says what and why. The ST
// side goes through ST's own controls (adapter.setControl), so ST's handlers run and save as for a user.

import { isNanoGptUrl, pickModel } from './format.js';
import { describeChange, valueLabel } from './st-labels.js';

// ST's Connect asks NanoGPT for the list; a slow network or a busy machine should not fail the switch.
const LIST_TIMEOUT_MS = 30000;
const SLOT_FOR = { builtin: 'nanogpt', chat: 'custom', text: 'generic' };
const KEY_LABEL = { nanogpt: 'NanoGPT API Key', custom: 'Custom API Key', generic: 'API key (optional)' };

/** The settings a switch may change (ST's control for each: adapter.controlFor). */
const FIELDS = [
    'main_api',
    'oai_settings.chat_completion_source',
    'oai_settings.custom_url',
    'oai_settings.custom_model',
    'oai_settings.nanogpt_model',
    'oai_settings.openai_max_context',
    'textgenerationwebui_settings.type',
    'textgenerationwebui_settings.server_urls.generic',
    'textgenerationwebui_settings.generic_model',
    'max_context',
];

export class SwitchError extends Error {}

export class ConnectionFlow {
    constructor({ adapter, client, store, settings, isSubscriber = () => false }) {
        this.adapter = adapter;
        this.isSubscriber = isSubscriber;
        this.client = client;
        this.store = store;
        this.settings = settings;
        this.t = (s) => adapter.t(s);
        this.busy = false;
    }

    /**
     * Which targets NanoGPT can serve, checked before anything changes: Text Completion only on an address
     * whose completions route exists, Chat Completion on the chat addresses.
     */
    validate(mode, id, endpoints) {
        if (mode === 'chat' && id === 'builtin') return null;
        const ep = (endpoints ?? []).find((e) => e.id === id);
        if (!ep) {
            const known = (endpoints ?? []).map((e) => e.id).join(', ');
            throw new SwitchError(`${this.t('Unknown NanoGPT endpoint')} "${id}". ${this.t('Use one of')}: builtin, ${known}.`);
        }
        if (mode === 'text' && !ep.text_completion) {
            const tc = (endpoints ?? []).filter((e) => e.text_completion).map((e) => `text:${e.id}`).join(', ');
            throw new SwitchError(`${this.t('NanoGPT does not serve Text Completion at')} ${ep.url} (${ep.title}); `
                + `${this.t('SillyTavern would call')} ${ep.url}/v1/completions, ${this.t('which does not exist. Use')} ${tc || 'text:v1'}.`);
        }
        if (mode === 'chat' && ep.chat_completion === false) {
            throw new SwitchError(`${ep.url} ${this.t('does not serve Chat Completion.')}`);
        }
        return ep;
    }

    /** Everything a switch may change, as it is now (for the report and for Undo). */
    snapshot() {
        const out = {};
        for (const path of FIELDS) out[path] = this.read(path);
        return out;
    }

    read(path) {
        if (path === 'main_api') return this.adapter.mainApi();
        if (path === 'max_context') return this.adapter.ctx()?.maxContext ?? numberOf(this.adapter.win.document.querySelector('#max_context')?.value);
        return this.adapter.readPath(path.split('.'));
    }

    set(path, value) {
        const f = this.adapter.controlFor(path);
        return this.adapter.setControl(f.sel, value, f.ev);
    }

    /**
     * Run the switch. Returns a report {target, steps, ready, changes, undo, problem}; throws SwitchError
     * (nothing changed) when the target itself is impossible.
     */
    async switchTo({ mode, id, endpoints }) {
        const ep = this.validate(mode, id, endpoints);
        if (this.busy) throw new SwitchError(this.t('A switch is already in progress.'));
        this.busy = true;
        try {
            return await this.run(mode, id, ep);
        } finally {
            this.busy = false;
        }
    }

    async run(mode, id, ep) {
        const kind = mode === 'text' ? 'text' : id === 'builtin' ? 'builtin' : 'chat';
        const before = this.snapshot();
        const previousModel = this.adapter.currentModel();
        const report = {
            target: { mode, id, kind, title: ep?.title ?? this.t('Built-in NanoGPT'), url: ep?.url ?? 'https://nano-gpt.com/api/v1' },
            steps: [],
            ready: false,
            changes: [],
            undo: { before, keyWrite: null, kind },
            problem: null,
            at: Date.now(),
        };
        const step = (key, ok, text) => report.steps.push({ key, ok, text });

        // 1. The key, into the slot this connection reads (the service writes secrets.json).
        const slot = SLOT_FOR[kind];
        let keyOk = false;
        try {
            const r = await this.client.call('/api/connection/key', { method: 'POST', body: { slot } });
            keyOk = true;
            report.undo.keyWrite = r.write_id ?? null;
            step('key', true, r.status === 'written'
                ? `${this.t(KEY_LABEL[slot])}: ${this.t('your NanoGPT key (added)')}`
                : `${this.t(KEY_LABEL[slot])}: ${this.t('your NanoGPT key')}`);
            if (r.status === 'written') await this.adapter.reloadSecretState(r.secret);
        } catch (err) {
            step('key', false, `${this.t(KEY_LABEL[slot])}: ${err.message}`);
            report.problem = err.message;
        }

        // 2. ST's connection settings, through ST's own controls (main API first: it cancels pending checks).
        if (kind === 'text') {
            this.adapter.setMainApi('textgenerationwebui');
            if (this.read('textgenerationwebui_settings.type') !== 'generic') this.set('textgenerationwebui_settings.type', 'generic');
            this.set('textgenerationwebui_settings.server_urls.generic', ep.url);
        } else {
            this.adapter.setMainApi('openai');
            if (kind === 'chat') this.set('oai_settings.custom_url', ep.url);
            const source = kind === 'chat' ? 'custom' : 'nanogpt';
            if (this.read('oai_settings.chat_completion_source') !== source) this.set('oai_settings.chat_completion_source', source);
        }

        // 3. ST's own Connect fetches the model list from that address with that key.
        const listed = await this.connectAndList(kind);
        if (listed.length) {
            step('list', true, `${this.t('Model list')}: ${listed.length} ${this.t('models from')} ${report.target.url}`);
        } else {
            const why = keyOk
                ? this.t('SillyTavern got no model list from NanoGPT (is NanoGPT reachable? Check API Connections).')
                : this.t('SillyTavern cannot list models without the key.');
            step('list', false, `${this.t('Model list')}: ${why}`);
            report.problem = report.problem ?? why;
        }

        // 4. A model that exists there: the one in use if listed, else the closest one, said plainly.
        let model = null;
        if (listed.length) {
            const entry = this.store?.byId;
            const picked = pickModel(previousModel, listed, entry ?? new Map(), { subscriber: !!this.isSubscriber() });
            model = picked.id;
            this.selectModel(kind, model);
            const label = this.modelLabel(model);
            if (picked.reason === 'same') step('model', true, `${this.t('Model')}: ${label} (${this.t('the one you used')})`);
            else if (previousModel) step('model', true, `${this.t('Model')}: ${label} — ${previousModel} ${this.t('is not offered at this address, so the closest match was chosen; change it in API Connections or the catalogue.')}`);
            else step('model', true, `${this.t('Model')}: ${label}`);
        } else {
            step('model', false, `${this.t('Model')}: ${this.t('none chosen (no model list)')}`);
        }

        // 5. Context size from the catalogue where ST does not take it from the model itself.
        if (model && kind !== 'builtin') this.applyContext(kind, model, step);

        // 6. Connected: ST's own status, and the model really set.
        const online = this.adapter.onlineStatus();
        const connected = listed.length > 0 && online && online !== 'no_connection' && keyOk;
        let connText;
        // ST's Text Completion status is the first model of the list (src/endpoints/backends/text-completions.js,
        // status handler), not the model in use: naming another model here would only confuse.
        const statusNote = listed.includes(online) && online !== model ? '' : ` (${online})`;
        if (connected) connText = `${this.t('Connection')}: ${this.t('connected')}${statusNote}`;
        else if (listed.length && !keyOk) connText = `${this.t('Connection')}: ${this.t('SillyTavern lists the models, but NanoGPT will refuse messages without the key')}`;
        else connText = `${this.t('Connection')}: ${this.t('not connected')}${online && online !== 'no_connection' ? ` (${online})` : ''}`;
        step('connected', connected, connText);
        report.ready = connected && !!model && this.adapter.currentModel() === model;
        report.changes = this.changes(before);
        return report;
    }

    /** ST's own Connect for that API; waits for ST to refill that list (not a list left from before). */
    async connectAndList(kind) {
        const api = kind === 'text' ? 'textgenerationwebui' : 'openai';
        const ok = await this.adapter.refillModelList(kind, () => this.adapter.clickConnect(api), LIST_TIMEOUT_MS);
        if (!ok) return [];
        await this.adapter.waitFor(() => this.adapter.onlineStatus() !== 'no_connection', 5000);
        return this.adapter.modelIds(kind);
    }

    selectModel(kind, model) {
        if (kind === 'text') {
            this.set('textgenerationwebui_settings.generic_model', model);
        } else if (kind === 'chat') {
            // Choosing in ST's list runs ST's onModelChange (CHATCOMPLETION_MODEL_CHANGED) and fills the id field.
            if (!this.adapter.setControl('#model_custom_select', model, 'change') || this.read('oai_settings.custom_model') !== model) {
                this.set('oai_settings.custom_model', model);
            }
        } else {
            this.set('oai_settings.nanogpt_model', model);
        }
    }

    modelLabel(id) {
        const entry = this.store?.byId?.get(id);
        return entry?.name && entry.name !== id ? `${entry.name} (${id})` : id;
    }

    /** Custom and Text Completion take the context size from ST's slider; the built-in source sets it itself. */
    applyContext(kind, model, step) {
        const entry = this.store?.byId?.get(model);
        const path = kind === 'text' ? 'max_context' : 'oai_settings.openai_max_context';
        const label = kind === 'text' ? this.t('Context (tokens)') : this.t('Context Size (tokens)');
        const current = numberOf(this.read(path));
        const modelCtx = entry?.context_length;
        if (!modelCtx) {
            step('context', null, `${label}: ${fmt(current)} (${this.t('the catalogue does not know this model\'s context')})`);
            return;
        }
        const slider = this.adapter.win.document.querySelector(this.adapter.controlFor(path).sel);
        const max = numberOf(slider?.max) ?? modelCtx;
        const wanted = this.settings().set_context_from_catalog ? Math.min(modelCtx, max) : (current && current > modelCtx ? modelCtx : null);
        if (wanted !== null && wanted !== current) this.set(path, wanted);
        const now = numberOf(this.read(path));
        const note = now < modelCtx
            ? (now === max ? ` (${this.t('SillyTavern\'s slider stops here; the model allows')} ${fmt(modelCtx)})` : ` (${this.t('the model allows')} ${fmt(modelCtx)})`)
            : '';
        step('context', true, `${label}: ${fmt(now)}${note}`);
    }

    changes(before) {
        const out = [];
        for (const path of FIELDS) {
            const a = before[path];
            const b = this.read(path);
            if (a === b || (a ?? '') === (b ?? '')) continue;
            out.push(describeChange(path, a, b, this.adapter.win.document));
        }
        return out;
    }

    /** Put back what the switch changed (ST's controls), the key slot (the service), and reconnect. */
    async undo(report) {
        const { before, keyWrite, kind } = report.undo;
        const messages = [];
        const now = this.snapshot();
        const order = ['main_api', 'textgenerationwebui_settings.type', 'textgenerationwebui_settings.server_urls.generic',
            'oai_settings.custom_url', 'oai_settings.chat_completion_source', 'oai_settings.custom_model',
            'textgenerationwebui_settings.generic_model', 'oai_settings.openai_max_context', 'max_context'];
        for (const path of order) {
            if ((now[path] ?? '') === (before[path] ?? '')) continue;
            if (path === 'oai_settings.nanogpt_model') continue; // only valid once ST lists it again
            this.set(path, before[path] ?? '');
        }
        if (keyWrite) {
            try {
                const r = await this.client.call('/api/connection/key/undo', { method: 'POST', body: { write_id: keyWrite } });
                messages.push(r.message);
                await this.adapter.reloadSecretState(`api_key_${SLOT_FOR[kind]}`);
            } catch (err) {
                messages.push(err.message);
            }
        }
        const api = before.main_api === 'textgenerationwebui' ? 'textgenerationwebui' : 'openai';
        if (before.main_api === 'openai' || before.main_api === 'textgenerationwebui') this.adapter.clickConnect(api);
        if (before['oai_settings.nanogpt_model'] && before['oai_settings.chat_completion_source'] === 'nanogpt') {
            const id = before['oai_settings.nanogpt_model'];
            if (await this.adapter.waitFor(() => this.adapter.modelIds('builtin').includes(id), LIST_TIMEOUT_MS)) {
                this.set('oai_settings.nanogpt_model', id);
            }
        }
        return messages;
    }

    /** What is in use now, in ST's words, for the panel's status line. */
    describeCurrent() {
        const a = this.adapter.activeSource();
        const doc = this.adapter.win.document;
        if (a.mainApi === 'textgenerationwebui') {
            return `${valueLabel('main_api', 'textgenerationwebui', doc)} · ${valueLabel('textgenerationwebui_settings.type', this.adapter.textSettings()?.type, doc)}`;
        }
        return `${valueLabel('main_api', a.mainApi, doc)} · ${valueLabel('oai_settings.chat_completion_source', a.source, doc)}${a.source === 'custom' && isNanoGptUrl(a.customUrl) ? ` · ${a.customUrl}` : ''}`;
    }
}

function numberOf(v) {
    const n = Number(v);
    return Number.isFinite(n) && v !== '' && v !== null && v !== undefined ? n : null;
}

function fmt(n) {
    return typeof n === 'number' ? n.toLocaleString('en-US') : '—';
}
