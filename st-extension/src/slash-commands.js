// /nano-* slash commands. Like ST's own commands each shows its outcome (a toast) and returns a plain string
// that can be piped into the next command. A bad argument is refused with a message saying what is
// accepted, and changes nothing.

import { filterCatalog, sortCatalog, thinkingTarget } from './format.js';

export function registerSlashCommands(app) {
    const { adapter } = app;
    const t = (s) => adapter.t(s);
    const reg = (props) => adapter.registerSlashCommand(props);
    const refuse = (message) => {
        adapter.toast('warning', message);
        return '';
    };
    const results = [
        reg({
            name: 'nano-balance',
            helpString: 'Refreshes and shows your NanoGPT balance and subscription quota (from NanoGPT Companion; at most one request to NanoGPT every few seconds). Returns the summary text.',
            returns: 'balance summary',
            callback: async () => {
                await app.refreshAccount({ force: true });
                const text = app.account.summary();
                adapter.toast('info', text, t('NanoGPT balance'));
                return text;
            },
        }),
        reg({
            name: 'nano-models',
            helpString: 'Lists NanoGPT model ids matching a query, one per line (up to 50). Without a query it opens the catalogue browser. Example: <code>/nano-models glm</code>',
            args: [{ description: 'search text', required: false }],
            returns: 'model ids, one per line',
            callback: async (query) => {
                await app.ensureCatalog();
                if (!query) {
                    app.openCatalog();
                    return String(app.store.models.length);
                }
                const hits = sortCatalog(filterCatalog(app.store.models, { q: query }), 'name');
                if (!hits.length) adapter.toast('info', `${t('No NanoGPT model matches')} "${query}".`);
                return hits.slice(0, 50).map((m) => m.id).join('\n');
            },
        }),
        reg({
            name: 'nano-sync',
            helpString: 'Refreshes the NanoGPT model catalogue now and reports what changed (also shown in NanoGPT Companion\'s Models section).',
            returns: 'sync summary',
            callback: async () => {
                const r = await app.sync();
                adapter.toast(r.ok ? 'success' : 'warning', r.text);
                return r.text;
            },
        }),
        reg({
            name: 'nano-fix',
            helpString: 'Applies Settings doctor fixes: <code>/nano-fix all</code>, or <code>/nano-fix &lt;finding id&gt;</code>. Without an argument lists the open findings.',
            args: [{ description: '"all" or a finding id', required: false }],
            returns: 'results, one per line',
            callback: async (arg) => {
                await app.doctor.refresh();
                const open = app.doctor.findings;
                if (!arg) {
                    const text = open.map((f) => `${f.id}: ${f.title}`).join('\n') || t('no findings');
                    adapter.toast('info', open.length ? `${open.length} ${t('open findings (see the Settings doctor)')}` : t('The Settings doctor found no problems.'));
                    return text;
                }
                if (arg !== 'all' && !open.some((f) => f.id === arg)) {
                    const ids = open.map((f) => f.id).join(', ');
                    return refuse(`/nano-fix: ${t('no open finding')} "${arg}". ${ids ? `${t('Open findings')}: ${ids}; ${t('or use')} "all".` : t('There are no open findings.')}`);
                }
                const results = await app.doctor.fix(arg === 'all' ? { all: true } : { ids: [arg] });
                const applied = results.filter((r) => r.status === 'applied' || r.status === 'sent_live').length;
                const text = results.map((r) => `${r.id}: ${r.status}${r.message ? ` (${r.message})` : ''}`).join('\n') || t('nothing to fix');
                adapter.toast(applied ? 'success' : 'info', results.length ? `${applied}/${results.length} ${t('fixes applied')}` : t('nothing to fix'));
                return text;
            },
        }),
        reg({
            name: 'nano-endpoint',
            helpString: 'Switches to a NanoGPT endpoint and leaves SillyTavern ready to chat (key, model list, model, connection): <code>builtin</code> (SillyTavern\'s NanoGPT source) or an address id such as <code>subscription</code>, <code>paid</code>, <code>v1</code>, <code>personalized</code>, <code>v1legacy</code>, <code>v1thinking</code> (Chat Completion, Custom source). Prefix with <code>text:</code> for Text Completion (<code>text:v1</code>). Returns the base URL ("builtin" for the built-in source).',
            args: [{ description: 'endpoint id', required: true }],
            returns: 'base URL or "builtin"',
            callback: async (arg) => {
                if (!arg) return refuse(`/nano-endpoint: ${t('name an endpoint, e.g.')} /nano-endpoint subscription, /nano-endpoint builtin, /nano-endpoint text:v1.`);
                await app.ensureEndpoints();
                const [mode, id] = arg.startsWith('text:') ? ['text', arg.slice(5)] : ['chat', arg];
                if (!id) return refuse(`/nano-endpoint: ${t('name the Text Completion address, e.g.')} text:v1.`);
                let report;
                try {
                    report = await app.endpoints.switchTo(id, mode);
                } catch (err) {
                    return refuse(`/nano-endpoint: ${err.message}`);
                }
                const failed = report.steps.filter((s) => s.ok === false).map((s) => s.text);
                if (report.ready) adapter.toast('success', `${t('Ready to chat')}: ${report.target.title}`);
                else adapter.toast('warning', `${t('Switched to')} ${report.target.title}, ${t('not ready')}: ${failed.join(' ')}`);
                return id === 'builtin' ? 'builtin' : report.target.url;
            },
        }),
        reg({
            name: 'nano-thinking',
            helpString: 'Switches the current NanoGPT model to its thinking variant (<code>on</code>) or back to the base model (<code>off</code>). Returns the model id now in use.',
            args: [{ description: 'on or off', required: true, enumList: ['on', 'off'] }],
            returns: 'model id',
            callback: async (arg) => {
                const value = arg.toLowerCase();
                if (value !== 'on' && value !== 'off') return refuse(`/nano-thinking: ${t('use')} "on" ${t('or')} "off" (${t('got')} "${arg}").`);
                await app.ensureCatalog();
                const current = adapter.currentModel();
                if (!current) return refuse(`/nano-thinking: ${t('no NanoGPT model is selected in SillyTavern.')}`);
                const target = thinkingTarget(current, app.store.byId, value === 'on');
                if (!target) {
                    adapter.toast('info', `${current}: ${t(value === 'off' ? 'no base model in the catalogue' : 'no thinking variant in the catalogue')}`);
                    return current;
                }
                if (target !== current) {
                    const r = await app.useModel(target, null, { quiet: true });
                    if (!r.ok) return refuse(r.message);
                }
                const now = adapter.currentModel() ?? target;
                adapter.toast('success', `${t(value === 'on' ? 'Thinking on' : 'Thinking off')}: ${now}`);
                return now;
            },
        }),
    ];
    return results.every(Boolean);
}
