/* SillyTavern stand-in for the extension's browser tests. Mirrors the parts of ST 1.18.0 the extension
 * touches (sillytavern.md sections 2, 5): the DOM ids, handlers that write `oai_settings` the way
 * public/scripts/openai.js does and emit the same events, and the getContext() members.
 * Everything observable is recorded on window.stStandIn for assertions. */
(function () {
    'use strict';
    const $ = window.jQuery;
    const raw = window.__ST_SETTINGS__ || {};
    const oai_settings = raw.oai_settings || {};
    const textgen_settings = raw.textgenerationwebui_settings || { type: 'ooba', server_urls: {} };
    textgen_settings.server_urls = textgen_settings.server_urls || {};
    const power_user = raw.power_user || {};
    const extension_settings = raw.extension_settings || {};
    let main_api = raw.main_api || 'openai';

    const rec = {
        events: [],          // [name, payload]
        saves: 0,
        handlerCalls: {},    // '#id:event' -> count (proves ST's handler ran)
        connectClicks: { openai: 0, textgenerationwebui: 0 },
        popups: 0,
        slashLog: [],
    };
    window.stStandIn = rec;

    // ----- events (public/scripts/events.js) -----
    const event_types = {
        APP_READY: 'app_ready',
        SETTINGS_LOADED: 'settings_loaded',
        SETTINGS_UPDATED: 'settings_updated',
        EXTENSION_SETTINGS_LOADED: 'extension_settings_loaded',
        MESSAGE_RECEIVED: 'message_received',
        GENERATION_ENDED: 'generation_ended',
        GENERATION_STOPPED: 'generation_stopped',
        CHATCOMPLETION_SOURCE_CHANGED: 'chatcompletion_source_changed',
        CHATCOMPLETION_MODEL_CHANGED: 'chatcompletion_model_changed',
        OAI_PRESET_CHANGED_BEFORE: 'oai_preset_changed_before',
        OAI_PRESET_CHANGED_AFTER: 'oai_preset_changed_after',
        MAIN_API_CHANGED: 'main_api_changed',
        ONLINE_STATUS_CHANGED: 'online_status_changed',
        CONNECTION_PROFILE_LOADED: 'connection_profile_loaded',
        CHAT_COMPLETION_SETTINGS_READY: 'chat_completion_settings_ready',
    };
    const listeners = {};
    const eventSource = {
        on(name, fn) { (listeners[name] = listeners[name] || []).push(fn); },
        once(name, fn) { const w = (...a) => { this.removeListener(name, w); return fn(...a); }; this.on(name, w); },
        removeListener(name, fn) { listeners[name] = (listeners[name] || []).filter((f) => f !== fn); },
        async emit(name, ...args) {
            rec.events.push([name, args[0]]);
            for (const fn of (listeners[name] || []).slice()) {
                try { await fn(...args); } catch (e) { console.error('event listener failed', name, e); }
            }
        },
    };

    // ----- settings save (script.js saveSettingsDebounced: 1 s debounce in ST; shortened here) -----
    let saveTimer = null;
    function saveSettingsDebounced() {
        clearTimeout(saveTimer);
        saveTimer = setTimeout(saveSettings, 100);
    }
    /** script.js saveSettings(): POST the whole settings object; the server writes settings.json. */
    async function saveSettings() {
        const body = Object.assign({}, raw, {
            main_api, oai_settings, textgenerationwebui_settings: textgen_settings, power_user, extension_settings,
        });
        const res = await fetch('/api/settings/save', {
            method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
        });
        if (res.ok) {
            rec.saves++;
            eventSource.emit(event_types.SETTINGS_UPDATED);
        }
    }
    const countCall = (key) => { rec.handlerCalls[key] = (rec.handlerCalls[key] || 0) + 1; };

    // ----- handlers, as in openai.js / script.js / textgen-settings.js -----
    $('#main_api').on('change', function () {
        countCall('#main_api:change');
        main_api = String($(this).val());
        $('[data-api]').each(function () { $(this).toggle($(this).data('api') === main_api); });
        saveSettingsDebounced();
        eventSource.emit(event_types.MAIN_API_CHANGED, { apiId: main_api });
    });
    $('#chat_completion_source').on('change', function () {
        countCall('#chat_completion_source:change');
        oai_settings.chat_completion_source = String($(this).find(':selected').val());
        toggleSources();
        saveSettingsDebounced();
        eventSource.emit(event_types.CHATCOMPLETION_SOURCE_CHANGED, oai_settings.chat_completion_source);
    });
    function onModelChange(id) {
        saveSettingsDebounced();
        eventSource.emit(event_types.CHATCOMPLETION_MODEL_CHANGED, id);
    }
    // openai.js `model_list`: what the last Connect returned. ST ignores model changes until a list has
    // loaded (onModelChange: `if (!value || !hasModelsLoaded) return`), seen in real ST 1.18 offline.
    let model_list = [];
    $('#model_nanogpt_select').on('change', function () {
        countCall('#model_nanogpt_select:change');
        const value = String($(this).val() || '');
        if (!value || model_list.length === 0) return;
        oai_settings.nanogpt_model = value;
        onModelChange(value);
    });
    $('#model_custom_select').on('change', function () {
        countCall('#model_custom_select:change');
        const value = String($(this).val() || '');
        if (!value) return;
        oai_settings.custom_model = value;
        $('#custom_model_id').val(value);
        onModelChange(value);
    });
    $('#custom_model_id').on('input', function () {
        countCall('#custom_model_id:input');
        oai_settings.custom_model = String($(this).val());
        saveSettingsDebounced();
    });
    $('#custom_api_url_text').on('input', function () {
        countCall('#custom_api_url_text:input');
        oai_settings.custom_url = String($(this).val());
        saveSettingsDebounced();
    });
    $('#custom_prompt_post_processing').on('change', function () {
        countCall('#custom_prompt_post_processing:change');
        oai_settings.custom_prompt_post_processing = String($(this).val());
        saveSettingsDebounced();
    });
    const checkboxes = {
        '#openai_show_thoughts': 'show_thoughts',
        '#openai_enable_web_search': 'enable_web_search',
        '#openai_media_inlining': 'media_inlining',
        '#openai_function_calling': 'function_calling',
    };
    for (const [sel, key] of Object.entries(checkboxes)) {
        $(sel).on('input', function () {
            countCall(`${sel}:input`);
            oai_settings[key] = !!$(this).prop('checked');
            saveSettingsDebounced();
        });
    }
    $('#openai_reasoning_effort').on('input', function () {
        countCall('#openai_reasoning_effort:input');
        oai_settings.reasoning_effort = String($(this).val());
        saveSettingsDebounced();
    });
    $('#openai_max_context').on('input', function () {
        countCall('#openai_max_context:input');
        oai_settings.openai_max_context = Number($(this).val());
        saveSettingsDebounced();
    });
    $('#textgen_type').on('change', function () {
        countCall('#textgen_type:change');
        textgen_settings.type = String($(this).val());
        saveSettingsDebounced();
    });
    $('#generic_api_url_text').on('input', function () {
        countCall('#generic_api_url_text:input');
        textgen_settings.server_urls.generic = String($(this).val());
        saveSettingsDebounced();
    });

    // Connect: ST asks its server for the source's model list, then fills the select (saveModelList).
    $('#api_button_openai').on('click', async function () {
        rec.connectClicks.openai++;
        if (oai_settings.chat_completion_source !== 'nanogpt') return;
        const res = await fetch('/standin/models.json');
        const data = await res.json();
        fillNanoGptSelect(data.data);
    });
    $('#api_button_textgenerationwebui').on('click', () => { rec.connectClicks.textgenerationwebui++; });

    /** ST's own fill of #model_nanogpt_select (openai.js saveModelList + sort/group helpers). */
    function fillNanoGptSelect(models) {
        model_list = models.slice();
        const list = models.slice();
        const sort = oai_settings.sort_models || 'alphabetically';
        if (sort === 'context_length') list.sort((a, b) => (b.context_length || 0) - (a.context_length || 0));
        else if (sort.startsWith('pricing.')) {
            const k = sort.split('.')[1];
            list.sort((a, b) => (a.pricing?.[k] ?? Infinity) - (b.pricing?.[k] ?? Infinity));
        } else list.sort((a, b) => String(a.name || a.id).localeCompare(String(b.name || b.id)));
        const $select = $('#model_nanogpt_select');
        $select.empty();
        if (oai_settings.group_models) {
            const groups = new Map();
            for (const m of list) {
                const vendor = m.id.includes('/') ? m.id.split('/')[0] : m.id.split('-')[0];
                if (!groups.has(vendor)) groups.set(vendor, $('<optgroup>', { label: vendor }));
                groups.get(vendor).append($('<option>', { value: m.id, text: m.name || m.id }));
            }
            for (const g of groups.values()) $select.append(g);
        } else {
            for (const m of list) $select.append($('<option>', { value: m.id, text: m.name || m.id }));
        }
        if (list.length && !list.some((m) => m.id === oai_settings.nanogpt_model)) oai_settings.nanogpt_model = list[0].id;
        $select.val(oai_settings.nanogpt_model).trigger('change');
    }

    /* openai.js getNanoGptModelTemplate: the dropdown rows are built from model_list (name, context,
     * price, Sub), not from the option's text; only options ST has no model for fall back to the text.
     * The closed select shows select2's cached option text. */
    function getNanoGptModelTemplate(option) {
        const model = model_list.find((x) => x.id === option?.element?.value);
        if (!option.id || !model) return option.text;
        const p = model.pricing ?? {};
        const price = p.prompt !== undefined && p.completion !== undefined ? `$${p.prompt}/$${p.completion} in/out Mtoken` : 'Unknown';
        const sub = model.subscription?.included ? ' | Sub' : '';
        return $('<div class="flex-container alignItemsBaseline">').append($('<strong>').text(model.name || model.id), ` | ${model.context_length || 'Unknown'} ctx | `, $('<small>').text(price), sub);
    }
    // ST (openai.js L7123) wraps the NanoGPT model select in select2 4.1 once, at start-up.
    if ($.fn.select2) {
        $('#model_nanogpt_select').select2({ placeholder: 'Select a model', width: '100%', templateResult: getNanoGptModelTemplate });
    }

    function toggleSources() {
        $('[data-source]').each(function () {
            $(this).toggle(String($(this).data('source')).split(',').includes(oai_settings.chat_completion_source));
        });
    }

    // ----- inline drawers (ST binds this once, delegated) -----
    $(document).on('click', '.inline-drawer-toggle', function () {
        const drawer = $(this).closest('.inline-drawer');
        const icon = drawer.find('>.inline-drawer-header .inline-drawer-icon');
        icon.toggleClass('down up').toggleClass('fa-circle-chevron-down fa-circle-chevron-up');
        drawer.find('>.inline-drawer-content').stop().slideToggle(0);
    });

    // ----- popups (public/scripts/popup.js: <dialog class="popup">) -----
    const POPUP_TYPE = { TEXT: 1, CONFIRM: 2, INPUT: 3, DISPLAY: 4, CROP: 5 };
    const POPUP_RESULT = { AFFIRMATIVE: 1, NEGATIVE: 0, CANCELLED: null };
    function callGenericPopup(content, type, inputValue = '', opts = {}) {
        rec.popups++;
        const dlg = document.createElement('dialog');
        dlg.className = 'popup' + (opts.wide ? ' wide_dialogue_popup' : '') + (opts.large ? ' large_dialogue_popup' : '');
        const body = document.createElement('div');
        body.className = 'popup-body';
        const inner = document.createElement('div');
        inner.className = 'popup-content';
        if (typeof content === 'string') inner.innerHTML = content; else inner.append(content);
        const controls = document.createElement('div');
        controls.className = 'popup-controls';
        const ok = document.createElement('div');
        ok.className = 'popup-button-ok menu_button';
        ok.setAttribute('role', 'button');
        ok.tabIndex = 0;
        ok.textContent = typeof opts.okButton === 'string' ? opts.okButton : 'OK';
        controls.append(ok);
        body.append(inner, controls);
        dlg.append(body);
        document.body.append(dlg);
        dlg.showModal();
        return new Promise((resolve) => {
            const close = (result) => { dlg.close(); dlg.remove(); resolve(result); };
            ok.addEventListener('click', () => close(POPUP_RESULT.AFFIRMATIVE));
            dlg.addEventListener('cancel', (e) => { e.preventDefault(); close(POPUP_RESULT.CANCELLED); });
        });
    }

    // ----- slash commands (SlashCommandParser.js / SlashCommand.js / SlashCommandArgument.js) -----
    const ARGUMENT_TYPE = { STRING: 'string', NUMBER: 'number', RANGE: 'range', BOOLEAN: 'bool', VARIABLE_NAME: 'varname', CLOSURE: 'closure', SUBCOMMAND: 'subcommand', LIST: 'list', DICTIONARY: 'dictionary' };
    class SlashCommandArgument {
        static fromProps(p) { return Object.assign(new SlashCommandArgument(), { typeList: [], isRequired: false, enumList: [] }, p); }
    }
    class SlashCommand {
        static fromProps(p) {
            const c = Object.assign(new SlashCommand(), { aliases: [], unnamedArgumentList: [], namedArgumentList: [], helpString: '' }, p);
            if (typeof c.callback !== 'function') throw new Error('callback required');
            return c;
        }
    }
    const SlashCommandParser = {
        commands: {},
        addCommandObject(cmd) {
            if (!(cmd instanceof SlashCommand)) throw new Error('not a SlashCommand');
            if (this.commands[cmd.name]) console.warn(`slash command ${cmd.name} is being overwritten`);
            this.commands[cmd.name] = cmd;
            for (const a of cmd.aliases) this.commands[a] = cmd;
        },
    };
    // ST's own /ppp, used by the extension as an alternative path (slash-commands.js L3545).
    SlashCommandParser.addCommandObject(SlashCommand.fromProps({
        name: 'prompt-post-processing', aliases: ['ppp'], helpString: 'Sets PPP',
        callback: (_a, v) => {
            if (!v) return oai_settings.custom_prompt_post_processing || 'none';
            $('#custom_prompt_post_processing').val(v === 'none' ? '' : v).trigger('change');
            return oai_settings.custom_prompt_post_processing;
        },
    }));
    /** A pipe-aware subset of ST's executor: `/a x | /b` passes a's result to b when b has no argument. */
    async function executeSlashCommandsWithOptions(text) {
        let pipe = '';
        for (const part of String(text).split(/\s*\|\s*(?=\/)/)) {
            const m = /^\/(\S+)\s*([\s\S]*)$/.exec(part.trim());
            if (!m) throw new Error(`not a command: ${part}`);
            const cmd = SlashCommandParser.commands[m[1]];
            if (!cmd) throw new Error(`unknown command /${m[1]}`);
            const arg = m[2] !== '' ? m[2] : pipe;
            pipe = await cmd.callback({}, arg);
            rec.slashLog.push([m[1], arg, pipe]);
        }
        return { pipe, isError: false };
    }

    const ctx = {
        chatCompletionSettings: oai_settings,
        textCompletionSettings: textgen_settings,
        powerUserSettings: power_user,
        extensionSettings: extension_settings,
        get mainApi() { return main_api; },
        saveSettingsDebounced,
        eventSource,
        eventTypes: event_types,
        event_types,
        renderExtensionTemplateAsync: async (name, id) => {
            const res = await fetch(`/scripts/extensions/${name}/${id}.html`);
            if (!res.ok) throw new Error(`template ${name}/${id} not found`);
            return res.text();
        },
        callGenericPopup,
        POPUP_TYPE,
        POPUP_RESULT,
        SlashCommandParser,
        SlashCommand,
        SlashCommandArgument,
        ARGUMENT_TYPE,
        executeSlashCommandsWithOptions,
        getRequestHeaders: () => ({ 'Content-Type': 'application/json', 'X-CSRF-Token': 'standin-csrf' }),
        t: (strings, ...values) => String.raw({ raw: strings }, ...values),
        translate: (text) => text,
        getCurrentLocale: () => 'en',
    };
    // script.js: `globalThis.SillyTavern = { libs, getContext }`; libs (public/lib.js) carries localforage.
    window.SillyTavern = { libs: window.localforage ? { localforage: window.localforage } : {}, getContext: () => ctx };

    // ----- initial UI state from settings (as ST's loadOpenAISettings / textgen load do) -----
    $('#main_api').val(main_api);
    $('[data-api]').each(function () { $(this).toggle($(this).data('api') === main_api); });
    $('#chat_completion_source').val(oai_settings.chat_completion_source);
    toggleSources();
    $('#custom_api_url_text').val(oai_settings.custom_url || '');
    $('#custom_model_id').val(oai_settings.custom_model || '');
    $('#custom_prompt_post_processing').val(oai_settings.custom_prompt_post_processing || '');
    for (const [sel, key] of Object.entries(checkboxes)) $(sel).prop('checked', !!oai_settings[key]);
    $('#openai_reasoning_effort').val(oai_settings.reasoning_effort || 'auto');
    $('#openai_max_context').val(oai_settings.openai_max_context);
    $('#textgen_type').val(textgen_settings.type);
    $('#generic_api_url_text').val(textgen_settings.server_urls.generic || '');

    rec.fillNanoGptSelect = fillNanoGptSelect;
    rec.emit = (name, payload) => eventSource.emit(name, payload);
    rec.raw = raw;
})();
