// The only module that touches SillyTavern: its DOM ids, jQuery, toastr and SillyTavern.getContext().
// Every ST API is feature-detected, so an older or newer ST degrades to a clear message instead of a
// thrown error. Changes to ST settings go through ST's own UI handlers (select + change, input + input)
// because those also update ST's derived state and persist; direct mutation is the fallback.

import { EXTENSION_NAME, SETTINGS_KEY, isNanoGptUrl, isUsableModelId } from './format.js';
import { settingLabel, valueLabel } from './st-labels.js';

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
    // ST 1.18.0+ (public/scripts/openai.js L7149-7157): provider choice and the pay-as-you-go override.
    'oai_settings.nanogpt_provider': { sel: '#nanogpt_provider', ev: 'change' },
    'oai_settings.nanogpt_payg_override': { sel: '#nanogpt_payg_override', ev: 'input', checkbox: true },
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
    'textgenerationwebui_settings.generic_model': { sel: '#generic_model_textgenerationwebui', ev: 'input' },
};

/** Top-level settings.json keys ST exposes (read-only copies) on getContext(). */
const TOP_LEVEL = {
    max_context: 'maxContext',
};

/** Controls outside the settings paths above that a connection switch also sets. */
const OTHER_CONTROLS = {
    main_api: { sel: '#main_api', ev: 'change' },
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

    /**
     * Listen to one of ST's events. ST awaits every listener in turn before it goes on (eventSource.emit),
     * and it drops a message sent while the previous send is still awaiting its MESSAGE_RECEIVED listeners
     * (the send button's mutex): so our work never hands ST a promise to wait for. A listener's failure is
     * logged, never thrown into ST's generation.
     */
    on(eventKey, handler) {
        const c = this.ctx();
        const types = c?.eventTypes ?? c?.event_types;
        const name = types?.[eventKey];
        if (!name || !c?.eventSource?.on) return false;
        const failed = (err) => console.warn(`[NanoGPT Companion] ${eventKey} listener failed`, err);
        c.eventSource.on(name, (...args) => {
            try {
                const result = handler(...args);
                if (typeof result?.then === 'function') result.then(undefined, failed);
            } catch (err) {
                failed(err);
            }
        });
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
        const tc = this.textSettings();
        return {
            mainApi: this.mainApi(),
            source: s?.chat_completion_source ?? null,
            customUrl: s?.custom_url ?? '',
            textType: tc?.type ?? null,
            genericUrl: tc?.server_urls?.generic ?? '',
            model: this.currentModel(),
            toolsEnabled: !!s?.function_calling,
        };
    }

    /**
     * Which NanoGPT connection is active: 'builtin' (Chat Completion, NanoGPT source), 'chat' (Custom with a
     * NanoGPT URL), 'text' (Text Completion, Generic with a NanoGPT URL), or null (NanoGPT is not in use).
     */
    nanoKind() {
        const a = this.activeSource();
        if (a.mainApi === 'openai' && a.source === 'nanogpt') return 'builtin';
        if (a.mainApi === 'openai' && a.source === 'custom' && isNanoGptUrl(a.customUrl)) return 'chat';
        if (a.mainApi === 'textgenerationwebui' && a.textType === 'generic' && isNanoGptUrl(a.genericUrl)) return 'text';
        return null;
    }

    /** The model of the active connection (Chat Completion Custom/NanoGPT, or Text Completion Generic). */
    currentModel() {
        if (this.mainApi() === 'textgenerationwebui') {
            const tc = this.textSettings();
            return tc?.type === 'generic' ? tc.generic_model || null : null;
        }
        const s = this.chatSettings();
        if (!s) return null;
        if (s.chat_completion_source === 'custom') return s.custom_model || null;
        if (s.chat_completion_source === 'nanogpt') return s.nanogpt_model || null;
        return null;
    }

    /** The model ids ST's own list holds for a connection kind (what its last Connect fetched). */
    modelIds(kind) {
        const d = this.win.document;
        const sel = { builtin: '#model_nanogpt_select option', chat: '#model_custom_select option', text: '#generic_model_fill option' }[kind];
        if (!sel) return [];
        return Array.from(d.querySelectorAll(sel)).map((o) => o.value).filter((v) => v && isUsableModelId(v));
    }

    /**
     * Run `action` (a Connect) and wait until ST has refilled the model list of `kind`: a change to that
     * select (or datalist) after the action, with models in it. ST appends every option within one task, so
     * by the time the observer runs the fill is complete. False after `ms` without a refill.
     */
    refillModelList(kind, action, ms) {
        const d = this.win.document;
        const el = { builtin: d.getElementById('model_nanogpt_select'), chat: d.getElementById('model_custom_select'), text: d.getElementById('generic_model_fill') }[kind];
        const MO = this.win.MutationObserver;
        if (!el || !MO) {
            action();
            return this.waitFor(() => this.modelIds(kind).length > 0, ms);
        }
        return new Promise((resolve) => {
            let done = false;
            const finish = (ok) => {
                if (done) return;
                done = true;
                mo.disconnect();
                clearTimeout(timer);
                resolve(ok);
            };
            const mo = new MO(() => {
                if (this.modelIds(kind).length > 0) finish(true);
            });
            mo.observe(el, { childList: true });
            const timer = setTimeout(() => finish(false), ms);
            action();
        });
    }

    onlineStatus() {
        return this.ctx()?.onlineStatus ?? null;
    }

    /** ST shows its Stop button while a reply is being generated; nothing that reconnects may run then. */
    isGenerating() {
        const stop = this.win.document.getElementById('mes_stop');
        return !!stop && stop.offsetParent !== null && this.win.getComputedStyle(stop).display !== 'none';
    }

    emit(eventKey, payload) {
        const c = this.ctx();
        const types = c?.eventTypes ?? c?.event_types;
        const name = types?.[eventKey];
        if (!name || !c?.eventSource?.emit) return false;
        c.eventSource.emit(name, payload);
        return true;
    }

    /**
     * ST's server re-reads secrets.json on every request, but the page learns which keys exist only on load
     * or after its own writes. After the service wrote a key, run ST's own readSecretState (the module ST
     * itself loaded, so its state and "Key saved" placeholders update) and emit SECRET_WRITTEN like ST's
     * writeSecret does, so other parts of ST refresh too.
     */
    async reloadSecretState(secretKey) {
        let ok = false;
        try {
            const mod = await import(new URL('../../../../secrets.js', import.meta.url).href);
            if (typeof mod.readSecretState === 'function') {
                await mod.readSecretState();
                ok = true;
            }
        } catch (err) {
            console.debug('[NanoGPT Companion] ST secrets module not available', err?.message);
        }
        this.emit('SECRET_WRITTEN', secretKey);
        return ok;
    }

    /** Open ST's Extensions panel and our drawer in it, and bring it into view (the badge's click). */
    openOwnDrawer() {
        const d = this.win.document;
        const content = d.getElementById('rm_extensions_block');
        if (content && !content.classList.contains('openDrawer')) {
            const toggle = d.querySelector('#extensions-settings-button .drawer-toggle');
            if (toggle) {
                if (this.$) this.$(toggle).trigger('click');
                else toggle.click();
            }
        }
        const ours = d.getElementById('ngc_drawer_content');
        if (ours && this.win.getComputedStyle(ours).display === 'none') d.querySelector('.ngc-drawer .inline-drawer-header')?.click();
        d.getElementById('ngc_drawer_root')?.scrollIntoView?.({ block: 'start', behavior: 'smooth' });
    }

    /** The compact balance shown while chatting: beside ST's chat menu buttons, left of the input box. */
    mountChatChip(el) {
        const d = this.win.document;
        const host = d.getElementById('leftSendForm') ?? d.getElementById('send_form');
        if (!host) return false;
        host.append(el);
        return true;
    }

    /**
     * The chat a generation belongs to: ST's chat id, its group if any, and the character (names and ids
     * only). In a group chat ST makes the member it drafts the current character for that member's
     * generation (group-chats.js), so each reply is booked to the character who wrote it as well as the group.
     */
    chatContext() {
        const c = this.ctx();
        if (!c) return {};
        let chatId = null;
        try {
            chatId = c.getCurrentChatId?.() ?? c.chatId ?? null;
        } catch {
            chatId = c.chatId ?? null;
        }
        const group = c.groupId ? (c.groups ?? []).find((g) => String(g.id) === String(c.groupId)) : null;
        const character = c.characterId !== undefined && c.characterId !== null ? c.characters?.[c.characterId] ?? null : null;
        return {
            chatId: chatId ? String(chatId) : null,
            groupId: group ? String(group.id) : null,
            group: group?.name ?? null,
            character: character?.name ?? null,
            characterId: character?.avatar ?? null,
        };
    }

    /** One message of the open chat (ST's own object; read, never changed). */
    chatMessage(messageId) {
        const chat = this.ctx()?.chat;
        return Array.isArray(chat) ? chat[Number(messageId)] ?? null : null;
    }

    /** ST's own token count of some texts (its tokenizer for the current API and model), or null. */
    async countTokens(texts) {
        const count = this.ctx()?.getTokenCountAsync;
        if (typeof count !== 'function') return null;
        try {
            const counts = await Promise.all(texts.map((text) => count(text, 0)));
            return counts.reduce((sum, n) => sum + (Number(n) || 0), 0);
        } catch {
            return null;
        }
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

    /**
     * True when ST renders this select's dropdown rows with its own template (select2 `templateResult`
     * other than select2's default), as 1.18+ does for the NanoGPT model list.
     */
    hasRichTemplate(select) {
        if (!select || !this.$) return false;
        try {
            const inst = this.$(select).data('select2');
            const mine = inst?.options?.get?.('templateResult');
            const base = this.$.fn?.select2?.defaults?.defaults?.templateResult;
            return typeof mine === 'function' && mine !== base;
        } catch {
            return false;
        }
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

    /** The ST control that owns a settings path and the event its handler listens to. */
    controlFor(path) {
        const key = Array.isArray(path) ? path.join('.') : path;
        return CONTROL_MAP[key] ?? OTHER_CONTROLS[key] ?? null;
    }

    /**
     * Image Generation with the NanoGPT source lists its models only when the page loads or the source
     * changes, and it does not reload them when a NanoGPT key is written (ST 1.13.5 and 1.18.0
     * public/scripts/extensions/stable-diffusion/index.js: its SECRET_WRITTEN handler covers other sources
     * only). So after the service put the key in place: re-select the source through ST's own handler
     * (which empties and refills #sd_model) and put the user's model back when NanoGPT still lists it.
     */
    async reloadImageModels({ timeoutMs = 10000 } = {}) {
        const doc = this.win.document;
        const source = doc.querySelector('#sd_source');
        const models = doc.querySelector('#sd_model');
        if (!this.$ || !source || !models || source.value !== 'nanogpt') return { ok: false, count: 0 };
        const before = this.ctx()?.extensionSettings?.sd?.model ?? null;
        this.$('#sd_source').trigger('change');
        const deadline = Date.now() + timeoutMs;
        while (models.options.length === 0 && Date.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 100));
        }
        if (before && this.hasOption(models, before) && models.value !== before) this.setControl('#sd_model', before, 'change');
        return { ok: models.options.length > 0, count: models.options.length };
    }

    /** Whether this ST's own NanoGPT provider list (1.18.0+, hard-coded per version) offers `id`. */
    hasProviderOption(id) {
        const el = this.win.document.querySelector('#nanogpt_provider');
        return !!el && this.hasOption(el, String(id));
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
            return { ok: false, message: `${settingLabel(path)} ${this.t('changed since the check (now')} ${valueLabel(path, current, this.win.document)})` };
        }
        const ctl = CONTROL_MAP[key];
        if (ctl) {
            const el = this.win.document.querySelector(ctl.sel);
            const selectOk = el && (el.tagName !== 'SELECT' || this.hasOption(el, String(op.value ?? '')));
            if (el && selectOk) {
                this.setControl(ctl.sel, ctl.checkbox ? !!op.value : op.value ?? '', ctl.ev, ctl.checkbox);
                if (sameValue(this.readPath(path), op.value)) return { ok: true, message: `${settingLabel(path)} ${this.t('set through SillyTavern\'s control')}` };
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
        if (!obj || rest.length === 0) return { ok: false, message: `${this.t('This SillyTavern cannot change')} ${settingLabel(path)}` };
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
        return { ok: true, message: `${settingLabel(path)} ${this.t('set')}` };
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

    useBuiltinNanoGpt() {
        this.setMainApi('openai');
        return this.setControl('#chat_completion_source', 'nanogpt', 'change');
    }

    /**
     * Select a model for the active API through ST's handlers: Text Completion (Generic) sets its model
     * field; Chat Completion Custom picks it in ST's list (or types the id); the built-in NanoGPT source needs
     * the option, which exists only after a Connect, so it connects first and waits for ST's fill. Any other
     * API switches Chat Completion to the built-in source first.
     */
    async selectModel(id, { waitMs = 8000 } = {}) {
        if (this.mainApi() === 'textgenerationwebui' && this.textSettings()?.type === 'generic') {
            this.setControl('#generic_model_textgenerationwebui', id, 'input');
            return { ok: this.textSettings()?.generic_model === id, source: 'text', message: `${id} could not be set as SillyTavern's Text Completion model` };
        }
        const src = this.mainApi() === 'openai' ? this.chatSettings()?.chat_completion_source : null;
        const { nanogpt, custom } = this.modelSelects();
        if (src === 'custom') {
            if (this.hasOption(custom, id)) this.setControl('#model_custom_select', id, 'change');
            if (this.chatSettings()?.custom_model !== id) this.setControl('#custom_model_id', id, 'input');
            return { ok: this.chatSettings()?.custom_model === id, source: 'custom' };
        }
        if (src !== 'nanogpt') this.useBuiltinNanoGpt();
        if (!this.hasOption(nanogpt, id)) {
            const loaded = await this.refillModelList('builtin', () => this.clickConnect('openai'), waitMs);
            if (!loaded || !this.hasOption(nanogpt, id)) {
                // Real ST leaves the select with only its "-- Connect to the API --" placeholder when its
                // Connect fails (no key, NanoGPT unreachable), and ignores model changes until a list loaded.
                const message = loaded
                    ? `${id} is not in the model list SillyTavern got from NanoGPT for your key; try another endpoint or model.`
                    : `SillyTavern could not load NanoGPT's model list (Connect failed: check the key and the connection under API Connections), so ${id} cannot be selected yet.`;
                return { ok: false, source: 'nanogpt', message };
            }
        }
        this.setControl('#model_nanogpt_select', id, 'change');
        return { ok: this.chatSettings()?.nanogpt_model === id, source: 'nanogpt' };
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

    registerSlashCommand({ name, helpString, args = [], namedArgs = [], returns, callback }) {
        const c = this.ctx();
        const { SlashCommandParser, SlashCommand, SlashCommandArgument, SlashCommandNamedArgument, ARGUMENT_TYPE } = c ?? {};
        if (!SlashCommandParser?.addCommandObject || !SlashCommand?.fromProps) return false;
        const unnamedArgumentList = args.map((a) => SlashCommandArgument?.fromProps
            ? SlashCommandArgument.fromProps({
                description: a.description,
                typeList: [ARGUMENT_TYPE?.STRING ?? 'string'],
                isRequired: !!a.required,
                enumList: a.enumList ?? [],
            })
            : a);
        const namedArgumentList = namedArgs.map((a) => SlashCommandNamedArgument?.fromProps
            ? SlashCommandNamedArgument.fromProps({
                name: a.name,
                description: a.description,
                typeList: [ARGUMENT_TYPE?.[a.type ?? 'STRING'] ?? 'string'],
                defaultValue: a.defaultValue,
                enumList: a.enumList ?? [],
            })
            : a);
        SlashCommandParser.addCommandObject(SlashCommand.fromProps({
            name,
            helpString,
            returns,
            unnamedArgumentList,
            namedArgumentList,
            callback: async (named, value) => String(await callback(String(value ?? '').trim(), named ?? {}) ?? ''),
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
