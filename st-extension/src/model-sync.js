// Brings SillyTavern's own model list in step with NanoGPT when the service reports a catalogue change.
// ST refreshes that list only when Connect is pressed, so a new model is missing and a removed one stays
// selectable. When a change arrives and ST is idle (no reply being generated), the list is refreshed
// through ST's own Connect for the active NanoGPT connection (built-in source, or Custom with a NanoGPT
// address), the user's model stays selected, and what changed is reported.
//
// One case is different: on the built-in source, ST's fill replaces a model that is no longer listed with
// the first model of the list (public/scripts/openai.js, the NanoGPT branch of saveModelList, 1.13.5 to
// 1.19.0). Pressing Connect then would switch the user's model silently, so instead the removed entries are
// disabled in ST's list and the Settings doctor's finding (model removed) offers the replacement.

const LIST_TIMEOUT_MS = 20000;
const REMOVED_ATTR = 'data-ngc-removed';

export class ModelSync {
    constructor({ adapter, onReport }) {
        this.adapter = adapter;
        this.onReport = onReport ?? (() => {});
        this.t = (s) => adapter.t(s);
        this.pending = null;
        this.running = false;
        // Defer while a reply is generated; run once ST reports the generation over.
        for (const ev of ['GENERATION_ENDED', 'GENERATION_STOPPED']) adapter.on(ev, () => this.flush());
    }

    /** A catalogue change from the service. Merges with one still waiting for ST to become idle. */
    onCatalogChange(diff) {
        const added = new Set([...(this.pending?.added ?? []), ...(diff?.added ?? [])]);
        const removed = new Set([...(this.pending?.removed ?? []), ...(diff?.removed ?? [])]);
        if (!added.size && !removed.size) return null;
        this.pending = { added: [...added], removed: [...removed] };
        return this.flush();
    }

    async flush() {
        if (!this.pending || this.running) return null;
        if (this.adapter.isGenerating()) return null; // GENERATION_ENDED/STOPPED calls flush again
        const diff = this.pending;
        this.pending = null;
        this.running = true;
        try {
            const result = await this.sync(diff);
            if (result) this.onReport(result);
            return result;
        } finally {
            this.running = false;
            if (this.pending) this.flush();
        }
    }

    async sync(diff) {
        const kind = this.adapter.nanoKind();
        if (kind !== 'builtin' && kind !== 'chat') return null;
        const selected = this.adapter.currentModel();
        const listed = new Set(this.adapter.modelIds(kind));
        if (!listed.size) {
            return { kind, refreshed: false, note: this.t('SillyTavern has not loaded its model list yet (press Connect in API Connections); nothing to refresh.') };
        }
        const touches = diff.added.some((id) => !listed.has(id)) || diff.removed.some((id) => listed.has(id));
        if (!touches) return { kind, refreshed: false, note: this.t('SillyTavern\'s model list already matches NanoGPT.') };
        const selectedRemoved = !!selected && diff.removed.includes(selected);
        if (kind === 'builtin' && selectedRemoved) {
            const disabled = this.disableRemoved(diff.removed, selected);
            return {
                kind,
                refreshed: false,
                selectedRemoved: true,
                note: `${this.t('NanoGPT removed the model you use')} (${selected}); ${this.t('SillyTavern\'s list was not reloaded, because that would switch your model silently. Removed models are disabled in it')} (${disabled}); ${this.t('pick another model or use the Settings doctor\'s suggestion.')}`,
            };
        }
        const ok = await this.adapter.refillModelList(kind, () => this.adapter.clickConnect('openai'), LIST_TIMEOUT_MS);
        const after = new Set(this.adapter.modelIds(kind));
        const gained = diff.added.filter((id) => after.has(id)).length;
        const lost = diff.removed.filter((id) => listed.has(id) && !after.has(id)).length;
        const kept = !selected || this.adapter.currentModel() === selected;
        if (!ok) {
            return { kind, refreshed: false, note: this.t('SillyTavern\'s model list could not be refreshed (Connect did not answer in time); press Connect in API Connections.') };
        }
        let note = `${this.t('SillyTavern\'s model list refreshed')}: +${gained} ${this.t('new')}, −${lost} ${this.t('removed')}`;
        if (selectedRemoved) {
            // ST keeps the id (the Custom source's text field), but NanoGPT would refuse it: say that, not "kept".
            note += `; ${this.t('NanoGPT removed your model')} ${selected}: ${this.t('SillyTavern still has it set, but messages with it will fail; see the Settings doctor for a replacement.')}`;
        } else if (selected) {
            note += kept ? `; ${this.t('your model')} ${selected} ${this.t('stays selected')}` : `; ${this.t('your model changed to')} ${this.adapter.currentModel()}`;
        }
        return { kind, refreshed: true, gained, lost, kept, selectedRemoved, note };
    }

    /** Built-in source only: grey out removed models (the selected one stays, marked) without reloading. */
    disableRemoved(removed, selected) {
        const select = this.adapter.modelSelects().nanogpt;
        if (!select) return 0;
        let n = 0;
        for (const opt of select.options) {
            if (!removed.includes(opt.value)) continue;
            opt.setAttribute(REMOVED_ATTR, '1');
            if (opt.value !== selected) opt.disabled = true;
            n++;
        }
        this.adapter.refreshSelectDisplay(select);
        return n;
    }
}
