// SillyTavern's own words for the settings this extension changes, so the panel, toasts and slash command
// results say "Chat Completion Source: NanoGPT → Custom (OpenAI-compatible)" and never a settings key.
// Setting names are the headings ST renders next to each control in public/index.html (the same text in
// 1.13.5, 1.18.0 and 1.19.0; tests/extension/test_st_labels.py checks every entry against each version).
// Value names are read from the live <option> of ST's own select, so they match the user's ST version and
// language exactly. Pure data plus DOM reads: no ST state is changed here.

/** settings path (dotted) -> the control ST shows it in and the heading beside that control. */
export const SETTING_LABELS = Object.freeze({
    main_api: { control: '#main_api', label: 'API' },
    'oai_settings.chat_completion_source': { control: '#chat_completion_source', label: 'Chat Completion Source' },
    'oai_settings.custom_url': { control: '#custom_api_url_text', label: 'Custom Endpoint (Base URL)' },
    'oai_settings.custom_model': { control: '#custom_model_id', label: 'Enter a Model ID' },
    'oai_settings.nanogpt_model': { control: '#model_nanogpt_select', label: 'NanoGPT Model' },
    'oai_settings.openai_max_context': { control: '#openai_max_context', label: 'Context Size (tokens)' },
    'oai_settings.custom_prompt_post_processing': { control: '#custom_prompt_post_processing', label: 'Prompt Post-Processing' },
    'textgenerationwebui_settings.type': { control: '#textgen_type', label: 'API Type' },
    'textgenerationwebui_settings.server_urls.generic': { control: '#generic_api_url_text', label: 'Server URL' },
    'textgenerationwebui_settings.generic_model': { control: '#generic_model_textgenerationwebui', label: 'Model ID (optional)' },
    max_context: { control: '#max_context', label: 'Context (tokens)' },
    'secrets.api_key_custom': { control: '#api_key_custom', label: 'Custom API Key' },
    'secrets.api_key_generic': { control: '#api_key_generic', label: 'API key (optional)' },
    'secrets.api_key_nanogpt': { control: '#api_key_nanogpt', label: 'NanoGPT API Key' },
    // Provider selection exists from ST 1.18.0 (public/index.html there, L3653-3661).
    'oai_settings.nanogpt_provider': { control: '#nanogpt_provider', label: 'Model Providers', since: '1.18.0' },
    'oai_settings.nanogpt_payg_override': { control: '#nanogpt_payg_override', label: 'Use pay-as-you-go billing', since: '1.18.0' },
});

/** The heading ST shows for a settings path (an array or a dotted string); the last key only as a fallback. */
export function settingLabel(path) {
    const key = Array.isArray(path) ? path.join('.') : String(path ?? '');
    const hit = SETTING_LABELS[key];
    if (hit) return hit.label;
    const last = key.split('.').pop() ?? key;
    const byLast = Object.entries(SETTING_LABELS).find(([k]) => k.split('.').pop() === last);
    return byLast ? byLast[1].label : last;
}

/**
 * A value as ST names it: the text of the matching <option> in ST's own select (so "custom" reads
 * "Custom (OpenAI-compatible)"), numbers with separators, "(empty)" for nothing.
 */
export function valueLabel(path, value, doc = globalThis.document) {
    if (value === null || value === undefined || value === '') return '(empty)';
    if (typeof value === 'boolean') return value ? 'on' : 'off';
    if (typeof value === 'number') return value.toLocaleString('en-US');
    const key = Array.isArray(path) ? path.join('.') : String(path ?? '');
    const control = SETTING_LABELS[key]?.control;
    const el = control ? doc?.querySelector?.(control) : null;
    if (el?.tagName === 'SELECT') {
        const opt = Array.from(el.options).find((o) => o.value === String(value));
        const text = opt?.getAttribute('data-ngc-base') ?? opt?.textContent;
        if (text && text.trim()) return text.trim();
    }
    return String(value);
}

/** "Chat Completion Source: NanoGPT → Custom (OpenAI-compatible)". */
export function describeChange(path, from, to, doc = globalThis.document) {
    return `${settingLabel(path)}: ${valueLabel(path, from, doc)} → ${valueLabel(path, to, doc)}`;
}
