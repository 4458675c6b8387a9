// The only module that touches SillyTavern: its DOM ids, jQuery, toastr and SillyTavern.getContext().
// Every ST API is feature-detected, so an older or newer ST degrades to a clear message instead of a
// thrown error. Changes to ST settings go through ST's own UI handlers (select + change, input + input)
// because those also update ST's derived state and persist; direct mutation is the fallback.

import { EXTENSION_NAME, SETTINGS_KEY } from './format.js';

const TEMPLATE_PATH = `third-party/${EXTENSION_NAME}`;

export const DEFAULT_SETTINGS = Object.freeze({
    show_badge: true,
    enrich_selects: true,
    only_subscription: false,
    show_thinking_variants: false,
    apply_model_fixes: true,
    set_context_from_catalog: false,
    catalog_sort: 'name',
    reply_doctor: true, // the formatting doctor's notices under NanoGPT replies
    regenerate_after_fix: true,
    dismissed_signatures: [], // "Not this": chat | signature | involved settings
});

/**
 * Maps a doctor patch path to the ST control whose handler owns that setting, and the DOM event that
 * handler listens to. Checkboxes are marked so the value goes to `checked`.
 */
const CONTROL_MAP = {
    'oai_settings.custom_prompt_post_processing': { sel: '#custom_prompt_post_processing', ev: 'change' },
    'oai_settings.chat_completion_source': { sel: '#chat_completion_source', ev: 'change' },
    'oai_settings.nanogpt_model': { sel: '#model_nanogpt_select', ev: 'change' },
    'oai_settings.custom_model': { sel: '#custom_model_id', ev: 'input' },
    'oai_settings.custom_url': { sel: '#custom_api_url_text', ev: 'input' },
    'oai_settings.show_thoughts': { sel: '#openai_show_thoughts', ev: 'input', checkbox: true },
    'oai_settings.enable_web_search': { sel: '#openai_enable_web_search', ev: 'input', checkbox: true },
    'oai_settings.media_inlining': { sel: '#openai_media_inlining', ev: 'input', checkbox: true },
    'oai_settings.image_inlining': { sel: '#openai_image_inlining', ev: 'input', checkbox: true },
    'oai_settings.function_calling': { sel: '#openai_function_calling', ev: 'input', checkbox: true },
    'oai_settings.reasoning_effort': { sel: '#openai_reasoning_effort', ev: 'input' },
    'oai_settings.openai_max_context': { sel: '#openai_max_context', ev: 'input' },
    'oai_settings.openai_max_tokens': { sel: '#openai_max_tokens', ev: 'input' },
    'oai_settings.squash_system_messages': { sel: '#squash_system_messages', ev: 'input', checkbox: true },
    // Advanced Formatting -> Reasoning -> Auto-Parse (reasoning.js: a `change` handler saves it).
    'power_user.reasoning.auto_parse': { sel: '#reasoning_auto_parse', ev: 'change', checkbox: true },
    'textgenerationwebui_settings.server_urls.generic': { sel: '#generic_api_url_text', ev: 'input' },
    'textgenerationwebui_settings.type': { sel: '#textgen_type', ev: 'change' },
    // Text Completion's context lives at the top of settings.json; ST's slider handler sets and saves it.
    max_context: { sel: '#max_context', ev: 'input' },
};

/** Top-level settings.json keys ST exposes (read-only copies) on getContext(). */
const TOP_LEVEL = {
    max_context: 'maxContext',
};

const ROOTS = {
    oai_settings: 'chatCompletionSettings',
    textgenerationwebui_settings: 'textCompletionSettings',
    power_user: 'powerUserSettings',
    extension_settings: 'extensionSettings',
};

export class StAdapter {
    constructor(win = globalThis) {
        this.win = win;
        this.$ = win.jQuery ?? win.$ ?? null;
        this.missing = [];
    }

    ctx() {
        try {
            return this.win.SillyTavern?.getContext?.() ?? null;
        } catch {
            return null;
        }
    }

    /** ST's i18n when present: `t` is a tagged template in ST; plain text otherwise. */
    t(text) {
        const c = this.ctx();
        if (typeof c?.translate === 'function') {
            try {
                return c.translate(text) ?? text;
            } catch {
                return text;
            }
        }
        return text;
    }

    /** What this ST lacks that we would use; shown once in the drawer instead of failing later. */
    capabilityReport() {
        const c = this.ctx();
        const need = {
            getContext: !!c,
            jQuery: !!this.$,
            eventSource: !!c?.eventSource?.on,
            chatCompletionSettings: !!c?.chatCompletionSettings,
            saveSettingsDebounced: typeof c?.saveSettingsDebounced === 'function',
            callGenericPopup: typeof c?.callGenericPopup === 'function',
            slashCommands: !!(c?.SlashCommandParser?.addCommandObject && c?.SlashCommand?.fromProps),
        };
        this.missing = Object.entries(need).filter(([, ok]) => !ok).map(([k]) => k);
        return this.missing;
    }

    settings() {
        const c = this.ctx();
        const store = c?.extensionSettings;
        if (!store) return { ...DEFAULT_SETTINGS };
        store[SETTINGS_KEY] = { ...DEFAULT_SETTINGS, ...(store[SETTINGS_KEY] ?? {}) };
        return store[SETTINGS_KEY];
    }

    saveSettings() {
        this.ctx()?.saveSettingsDebounced?.();
    }

    on(eventKey, handler) {
        const c = this.ctx();
        const types = c?.eventTypes ?? c?.event_types;
        const name = types?.[eventKey];
        if (!name || !c?.eventSource?.on) return false;
        c.eventSource.on(name, handler);
        return true;
    }

    async renderTemplate(id, data = {}) {
        const c = this.ctx();
        if (typeof c?.renderExtensionTemplateAsync === 'function') {
            return c.renderExtensionTemplateAsync(TEMPLATE_PATH, id, data);
        }
        const res = await fetch(`/scripts/extensions/${TEMPLATE_PATH}/${id}.html`);
        return res.text();
    }

    mountDrawer(html) {
        const host = this.win.document.getElementById('extensions_settings');
        if (!host) return null;
        const wrap = this.win.document.createElement('div');
        wrap.id = 'ngc_drawer_root';
        wrap.innerHTML = html;
        host.append(wrap);
        return wrap;
    }

    /** Near the API connection controls; reserved height in CSS so ST's panel does not jump. */
    mountBadge(el) {
        const d = this.win.document;
        const block = d.getElementById('rm_api_block');
        if (block) {
            block.prepend(el);
            return true;
        }
        const mainApi = d.getElementById('main_api');
        if (mainApi?.parentElement) {
            mainApi.parentElement.insertBefore(el, mainApi.nextSibling);
            return true;
        }
        return false;
    }

    toast(level, message, title = 'NanoGPT Companion') {
        const toastr = this.win.toastr;
        const fn = toastr?.[level] ?? toastr?.info;
        if (typeof fn === 'function') fn.call(toastr, message, title);
    }

    async popup(content, { okButton = 'Close', wide = true, large = true } = {}) {
        const c = this.ctx();
        if (typeof c?.callGenericPopup !== 'function') {
            this.toast('warning', this.t('This SillyTavern version has no popup API; update SillyTavern to use the catalogue browser.'));
            return null;
        }
        const type = c.POPUP_TYPE?.TEXT ?? 1;
        return c.callGenericPopup(content, type, '', { wide, large, okButton, allowVerticalScrolling: true });
    }

    // ----- reading ST state -----

    mainApi() {
        const el = this.win.document.getElementById('main_api');
        return el?.value ?? this.ctx()?.mainApi ?? null;
    }

    chatSettings() {
        return this.ctx()?.chatCompletionSettings ?? null;
    }

    textSettings() {
        return this.ctx()?.textCompletionSettings ?? null;
    }

    /** Where NanoGPT is in use right now, if anywhere: 'nanogpt' (built-in), 'custom' (NanoGPT URL) or null. */
    activeSource() {
        const s = this.chatSettings();
        return {
            mainApi: this.mainApi(),
            source: s?.chat_completion_source ?? null,
            customUrl: s?.custom_url ?? '',
            model: this.currentModel(),
            toolsEnabled: !!s?.function_calling,
        };
    }

    currentModel() {
        const s = this.chatSettings();
        if (!s) return null;
        if (s.chat_completion_source === 'custom') return s.custom_model || null;
        if (s.chat_completion_source === 'nanogpt') return s.nanogpt_model || null;
        return null;
    }

    readPath(path) {
        const [root, ...rest] = path;
        if (rest.length === 0 && TOP_LEVEL[root]) return this.ctx()?.[TOP_LEVEL[root]];
        const key = ROOTS[root];
        let obj = key ? this.ctx()?.[key] : undefined;
        for (const p of rest) {
            if (obj === null || obj === undefined) return undefined;
            obj = obj[p];
        }
        return obj;
    }

    modelSelects() {
        const d = this.win.document;
        return {
            nanogpt: d.getElementById('model_nanogpt_select'),
            custom: d.getElementById('model_custom_select'),
        };
    }

    /**
     * ST wraps #model_nanogpt_select in select2 (4.1), which caches each option's {text, disabled} the
     * first time it reads it; ST's fill ends with `.val(..).trigger('change')`, so the selected option is
     * cached with ST's plain label before our enrichment runs, and a namespaced change alone re-renders
     * that stale copy (seen in real ST 1.18). So the cache is brought in step first. The namespaced
     * trigger refreshes only select2's display; ST's own (un-namespaced) change handler does not run.
     */
    refreshSelectDisplay(select) {
        if (!select || !this.$) return;
        const $el = this.$(select);
        if (!$el.data('select2')) return;
        const utils = this.select2Utils();
        if (utils) {
            for (const opt of select.options) {
                const cached = utils.GetData(opt, 'data');
                if (cached && typeof cached === 'object') {
                    cached.text = opt.textContent;
                    cached.disabled = opt.disabled;
                }
            }
        }
        $el.trigger('change.select2');
    }

    select2Utils() {
        try {
            const utils = this.$?.fn?.select2?.amd?.require?.('select2/utils');
            return typeof utils?.GetData === 'function' ? utils : null;
        } catch {
            return null;
        }
    }

    /**
     * select2 lists `hidden` options anyway (as disabled rows when disabled), so the "only my
     * subscription" filter also needs a page-level flag that style.css uses to hide the disabled rows
     * of ST's two model dropdowns only.
     */
    markSubscriptionFilter(on) {
        this.win.document.body?.classList.toggle('ngc-only-sub', !!on);
    }

    observe(el, callback) {
        const MO = this.win.MutationObserver;
        if (!el || !MO) return null;
        const mo = new MO(callback);
        mo.observe(el, { childList: true, subtree: true });
        return mo;
    }

    /** Error toasts ST shows for failed generations; read passively from toastr's container. */
    observeErrorToasts(callback) {
        const d = this.win.document;
        const MO = this.win.MutationObserver;
        if (!MO) return null;
        const mo = new MO((records) => {
            for (const r of records) {
                for (const n of r.addedNodes) {
                    if (n.nodeType !== 1) continue;
                    const toast = n.classList?.contains('toast') ? n : n.querySelector?.('.toast');
                    if (toast && toast.classList.contains('toast-error') && !toast.closest('.ngc-own-toast')) {
                        callback(toast.textContent ?? '');
                    }
                }
            }
        });
        mo.observe(d.body, { childList: true, subtree: true });
        return mo;
    }

    // ----- changing ST state through its own handlers -----

    /** Set a control's value and fire the event ST's handler listens to. */
    setControl(sel, value, ev, checkbox = false) {
        const $ = this.$;
        const el = this.win.document.querySelector(sel);
        if (!el) return false;
        if ($) {
            const $el = $(el);
            if (checkbox) $el.prop('checked', !!value);
            else $el.val(value);
            $el.trigger(ev);
        } else {
            if (checkbox) el.checked = !!value;
            else el.value = value;
            el.dispatchEvent(new Event(ev, { bubbles: true }));
        }
        return true;
    }

    hasOption(select, value) {
        return !!select && Array.from(select.options).some((o) => o.value === value);
    }

    /**
     * Apply one patch op. Returns {ok, message}. Refuses when the live value moved on since the rule
     * looked (`old`), so a fix never clobbers a choice the user made meanwhile.
     */
    applyPatchOp(op) {
        const path = op.path ?? [];
        const key = path.join('.');
        const current = this.readPath(path);
        if (op.old !== undefined && op.old !== null && current !== undefined && !sameValue(current, op.old) && !sameValue(current, op.value)) {
            return { ok: false, message: `${key} changed since the check (now ${JSON.stringify(current)})` };
        }
        const ctl = CONTROL_MAP[key];
        if (ctl) {
            const el = this.win.document.querySelector(ctl.sel);
            const selectOk = el && (el.tagName !== 'SELECT' || this.hasOption(el, String(op.value ?? '')));
            if (el && selectOk) {
                this.setControl(ctl.sel, ctl.checkbox ? !!op.value : op.value ?? '', ctl.ev, ctl.checkbox);
                if (sameValue(this.readPath(path), op.value)) return { ok: true, message: `${key} set through ST's control` };
            }
        }
        return this.mutatePath(path, op.value);
    }

    /** Fallback: write into ST's live settings object and let ST persist it. */
    mutatePath(path, value) {
        const [root, ...rest] = path;
        const key = ROOTS[root];
        const c = this.ctx();
        let obj = key ? c?.[key] : null;
        if (!obj || rest.length === 0) return { ok: false, message: `cannot apply ${path.join('.')} in this SillyTavern` };
        for (const p of rest.slice(0, -1)) {
            if (obj[p] === null || typeof obj[p] !== 'object') obj[p] = {};
            obj = obj[p];
        }
        obj[rest[rest.length - 1]] = value;
        const ctl = CONTROL_MAP[path.join('.')];
        if (ctl && this.$) {
            // Keep the visible control in step so the UI is not stale.
            const $el = this.$(ctl.sel);
            if (ctl.checkbox) $el.prop('checked', !!value);
            else $el.val(value);
        }
        if (typeof c.saveSettingsDebounced !== 'function') return { ok: false, message: 'SillyTavern cannot save settings' };
        c.saveSettingsDebounced();
        return { ok: true, message: `${path.join('.')} set directly` };
    }

    clickConnect(api = 'openai') {
        const btn = this.win.document.getElementById(api === 'openai' ? 'api_button_openai' : 'api_button_textgenerationwebui');
        if (!btn) return false;
        if (this.$) this.$(btn).trigger('click');
        else btn.click();
        return true;
    }

    setMainApi(api) {
        if (this.mainApi() === api) return true;
        return this.setControl('#main_api', api, 'change');
    }

    /** Chat Completion -> Custom (OpenAI-compatible) with a NanoGPT base URL. */
    useCustomEndpoint(url) {
        this.setMainApi('openai');
        if (this.chatSettings()?.chat_completion_source !== 'custom') this.setControl('#chat_completion_source', 'custom', 'change');
        return this.setControl('#custom_api_url_text', url, 'input');
    }

    useBuiltinNanoGpt() {
        this.setMainApi('openai');
        return this.setControl('#chat_completion_source', 'nanogpt', 'change');
    }

    /** Text Completion -> Generic (OpenAI-compatible) with a NanoGPT base URL. */
    useTextEndpoint(url) {
        this.setMainApi('textgenerationwebui');
        this.setControl('#textgen_type', 'generic', 'change');
        return this.setControl('#generic_api_url_text', url, 'input');
    }

    /**
     * Select a model for the active source through ST's handlers. For the built-in source the option
     * only exists after a Connect, so connect first and wait for ST to fill the select.
     */
    async selectModel(id, { waitMs = 5000 } = {}) {
        const src = this.chatSettings()?.chat_completion_source;
        const { nanogpt, custom } = this.modelSelects();
        if (src === 'custom') {
            this.setControl('#custom_model_id', id, 'input');
            if (this.hasOption(custom, id)) this.setControl('#model_custom_select', id, 'change');
            return { ok: true, source: 'custom' };
        }
        if (src !== 'nanogpt') this.useBuiltinNanoGpt();
        if (!this.hasOption(nanogpt, id)) {
            this.clickConnect('openai');
            const ok = await this.waitFor(() => this.hasOption(nanogpt, id), waitMs);
            if (!ok) {
                // Real ST leaves the select with only its "-- Connect to the API --" placeholder when its
                // Connect fails (no key, NanoGPT unreachable), and ignores model changes until a list loaded.
                const loaded = Array.from(nanogpt?.options ?? []).some((o) => o.value);
                const message = loaded
                    ? `${id} is not in the model list SillyTavern got from NanoGPT for your key; try another endpoint or model.`
                    : `SillyTavern could not load NanoGPT's model list (Connect failed: check the key and the connection under API Connections), so ${id} cannot be selected yet.`;
                return { ok: false, source: 'nanogpt', message };
            }
        }
        this.setControl('#model_nanogpt_select', id, 'change');
        return { ok: true, source: 'nanogpt' };
    }

    waitFor(pred, ms) {
        return new Promise((resolve) => {
            if (pred()) return resolve(true);
            const started = Date.now();
            const tick = () => {
                if (pred()) return resolve(true);
                if (Date.now() - started > ms) return resolve(false);
                setTimeout(tick, 50);
            };
            setTimeout(tick, 50);
        });
    }

    registerSlashCommand({ name, helpString, args = [], returns, callback }) {
        const c = this.ctx();
        const { SlashCommandParser, SlashCommand, SlashCommandArgument, ARGUMENT_TYPE } = c ?? {};
        if (!SlashCommandParser?.addCommandObject || !SlashCommand?.fromProps) return false;
        const unnamedArgumentList = args.map((a) => SlashCommandArgument?.fromProps
            ? SlashCommandArgument.fromProps({
                description: a.description,
                typeList: [ARGUMENT_TYPE?.STRING ?? 'string'],
                isRequired: !!a.required,
                enumList: a.enumList ?? [],
            })
            : a);
        SlashCommandParser.addCommandObject(SlashCommand.fromProps({
            name,
            helpString,
            returns,
            unnamedArgumentList,
            callback: async (_named, value) => String(await callback(String(value ?? '').trim()) ?? ''),
        }));
        return true;
    }
}

function sameValue(a, b) {
    if (a === b) return true;
    // ST stores "" for "None" while a rule may say null; treat them as one.
    if ((a === '' || a === null || a === undefined) && (b === '' || b === null || b === undefined)) return true;
    return JSON.stringify(a) === JSON.stringify(b);
}
