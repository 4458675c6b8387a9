// /nano-* slash commands. Each returns a plain string so it can be piped into other ST commands.

import { filterCatalog, sortCatalog, thinkingTarget } from './format.js';

export function registerSlashCommands(app) {
    const { adapter } = app;
    const reg = (props) => adapter.registerSlashCommand(props);
    const results = [
        reg({
            name: 'nano-balance',
            helpString: 'Shows your NanoGPT balance and subscription quota (from NanoGPT Companion). Returns the summary text.',
            returns: 'balance summary',
            callback: async () => {
                await app.refreshAccount();
                return app.account.summary();
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
                return hits.slice(0, 50).map((m) => m.id).join('\n');
            },
        }),
        reg({
            name: 'nano-sync',
            helpString: 'Refreshes the NanoGPT model catalogue now and reports what changed.',
            returns: 'sync summary',
            callback: async () => app.sync(),
        }),
        reg({
            name: 'nano-fix',
            helpString: 'Applies Settings doctor fixes: <code>/nano-fix all</code>, or <code>/nano-fix &lt;finding id&gt;</code>. Without an argument lists the open findings.',
            args: [{ description: '"all" or a finding id', required: false }],
            returns: 'results, one per line',
            callback: async (arg) => {
                if (!arg) {
                    await app.doctor.refresh();
                    return app.doctor.findings.map((f) => `${f.id}: ${f.title}`).join('\n') || 'no findings';
                }
                const results = await app.doctor.fix(arg === 'all' ? { all: true } : { ids: [arg] });
                return results.map((r) => `${r.id}: ${r.status}${r.message ? ` (${r.message})` : ''}`).join('\n') || 'nothing to fix';
            },
        }),
        reg({
            name: 'nano-endpoint',
            helpString: 'Switches Chat Completion to a NanoGPT endpoint: <code>builtin</code> (SillyTavern\'s NanoGPT source) or a tier such as <code>subscription</code>, <code>paid</code>, <code>v1</code>, <code>personalized</code>, <code>v1legacy</code>, <code>v1thinking</code>. Prefix with <code>text:</code> for Text Completion. Returns the base URL.',
            args: [{ description: 'endpoint id', required: true }],
            returns: 'base URL or "builtin"',
            callback: async (arg) => {
                await app.ensureEndpoints();
                const [mode, id] = arg.startsWith('text:') ? ['text', arg.slice(5)] : ['chat', arg];
                try {
                    return app.endpoints.switchTo(id || 'builtin', mode);
                } catch (err) {
                    adapter.toast('warning', err.message);
                    return '';
                }
            },
        }),
        reg({
            name: 'nano-thinking',
            helpString: 'Switches the current NanoGPT model to its thinking variant (<code>on</code>) or back to the base model (<code>off</code>). Returns the model id now in use.',
            args: [{ description: 'on or off', required: true, enumList: ['on', 'off'] }],
            returns: 'model id',
            callback: async (arg) => {
                await app.ensureCatalog();
                const current = adapter.currentModel();
                if (!current) return '';
                const target = thinkingTarget(current, app.store.byId, arg !== 'off');
                if (!target) {
                    adapter.toast('info', `${current}: no ${arg === 'off' ? 'base model' : 'thinking variant'} in the catalogue`);
                    return current;
                }
                if (target !== current) await adapter.selectModel(target);
                return adapter.currentModel() ?? target;
            },
        }),
    ];
    return results.every(Boolean);
}
