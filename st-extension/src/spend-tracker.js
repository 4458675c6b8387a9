// Notices NanoGPT generations in ST and reports each one to the service when it ends: chat, character or
// group, model, source, endpoint, message id and ST's own token counts. Never the text: the prompt is only
// counted here, with ST's tokenizer, and dropped.
//
// ST's events, as their code emits them (checked in 1.13.5, 1.18.0 and 1.19.0, public/scripts/events.js):
// - CHAT_COMPLETION_SETTINGS_READY(generate_data): the request, just before it is sent (openai.js
//   sendOpenAIRequest); TEXT_COMPLETION_SETTINGS_READY(params) the same for Text Completion
//   (textgen-settings.js getTextGenGenerationData, also on dry runs: GENERATE_AFTER_DATA(data, dryRun=true)
//   follows those, and then the request is dropped here).
// - MESSAGE_RECEIVED(messageId, type): the reply is in the chat (script.js, also for greetings:
//   type "first_message", which is no generation).
// - GENERATION_ENDED / GENERATION_STOPPED: ST's stop button went away. With streaming it fires before
//   MESSAGE_RECEIVED, so requests sent before it and still open a moment later had no message (quiet
//   prompts, impersonation, errors, a stop) and are reported without one; a request sent after it (the
//   user's next message, quickly) is left alone.
//
// Each request's start is told to the service too (POST /api/spend/generations/started): a reading of the
// balance taken while it runs, or before its report arrives (ST saves the chat and counts tokens first),
// may already include its cost, and the service waits for the report instead of giving that cost to
// another generation. Text Completion requests are started on GENERATE_AFTER_DATA (not a dry run), since
// their settings event also fires for dry runs.

import { debounce } from './format.js';
import { generationId, nanoGptTarget, promptParts } from './spend-format.js';

const FLUSH_AFTER_END_MS = 1500;
const NO_MESSAGE_TYPES = new Set(['quiet', 'impersonate']); // generations that never become a chat message
const MAX_OPEN_MS = 10 * 60 * 1000; // a request never answered (ST crashed mid-way) is reported anyway
const MAX_QUEUE = 200;

export class SpendTracker {
    constructor({ adapter, client, onReported, now = () => Date.now() }) {
        this.adapter = adapter;
        this.client = client;
        this.onReported = onReported ?? (() => {});
        this.now = now;
        this.open = []; // requests sent, not reported yet (oldest first)
        this.queue = []; // reports the service has not accepted yet (retried on reconnect)
        this.stopped = false;
        this.endedAt = 0;
        this.flushSoon = debounce(() => this.flush(), FLUSH_AFTER_END_MS);
    }

    /**
     * Listen to ST's events this version has; returns whether generations can be noticed at all. ST awaits
     * its listeners, so none of these returns a promise: ST's generation never waits for a report.
     */
    attach() {
        const a = this.adapter;
        const chat = a.on('CHAT_COMPLETION_SETTINGS_READY', (data) => void this.onRequest('chat', data));
        const text = a.on('TEXT_COMPLETION_SETTINGS_READY', (data) => void this.onRequest('text', data));
        a.on('GENERATE_AFTER_DATA', (_data, dryRun) => void (dryRun === true ? this.dropDryRun() : this.startText()));
        a.on('MESSAGE_RECEIVED', (messageId, type) => void this.onMessage(messageId, type));
        a.on('GENERATION_ENDED', () => void this.ended());
        a.on('GENERATION_STOPPED', () => {
            this.stopped = true;
            this.ended();
        });
        this.supported = chat || text;
        return this.supported;
    }

    onRequest(kind, data) {
        const target = nanoGptTarget(kind, data, this.adapter.textSettings());
        if (!target) return;
        // Counted now (the data object is ST's and changes later); the text itself is not kept.
        const tokens = this.adapter.countTokens(promptParts(kind, data));
        this.open.push({
            id: generationId(),
            kind,
            at: this.now(),
            type: typeof data?.type === 'string' ? data.type : null,
            target,
            chat: this.adapter.chatContext(),
            promptTokens: tokens,
            started: false,
        });
        this.expire();
        if (kind === 'chat') this.started(this.open.at(-1));
    }

    startText() {
        const last = this.open.at(-1);
        if (last?.kind === 'text' && !last.started) this.started(last);
    }

    /** Tell the service a request is on its way (best effort: a start that cannot be sent is not kept). */
    started(request) {
        request.started = true;
        this.client.call('/api/spend/generations/started', { method: 'POST', body: { id: request.id } })
            .catch((err) => console.debug('[NanoGPT Companion] spend start not sent', err?.code));
    }

    ended() {
        this.endedAt = this.now();
        this.flushSoon();
    }

    dropDryRun() {
        // A dry run only built a prompt (its settings event came right before this one): nothing was sent.
        const last = this.open.at(-1);
        if (last?.kind === 'text' && this.now() - last.at < 1000) this.open.pop();
    }

    async onMessage(messageId, type) {
        if (type === 'first_message' || !this.open.length) return;
        const index = this.open.findIndex((r) => !NO_MESSAGE_TYPES.has(r.type));
        const [request] = this.open.splice(Math.max(0, index), 1);
        const message = this.adapter.chatMessage(messageId);
        const completion = message?.extra?.token_count > 0
            ? message.extra.token_count // ST counted it itself ("message token count" on)
            : this.adapter.countTokens([message?.extra?.reasoning, message?.mes].filter(Boolean));
        await this.send(request, { messageId, type, completion, outcome: this.stopped ? 'stopped' : 'ok' });
        if (!this.open.length) this.stopped = false;
    }

    /** Requests sent before the generation ended and still without a message: quiet prompts,
     * impersonation, errors, stops. */
    async flush() {
        const pending = this.open.filter((r) => r.at <= this.endedAt);
        this.open = this.open.filter((r) => r.at > this.endedAt);
        for (const request of pending) {
            await this.send(request, { messageId: null, type: null, completion: null, outcome: this.stopped ? 'stopped' : 'ok' });
        }
        this.stopped = false;
    }

    expire() {
        const old = this.open.filter((r) => this.now() - r.at > MAX_OPEN_MS);
        if (!old.length) return;
        this.open = this.open.filter((r) => !old.includes(r));
        for (const request of old) this.send(request, { messageId: null, type: null, completion: null, outcome: 'error' });
    }

    async send(request, { messageId, type, completion, outcome }) {
        const [prompt, completionTokens] = await Promise.all([request.promptTokens, completion]);
        const chat = request.chat ?? {};
        const body = {
            id: request.id,
            model: request.target.model || 'unknown',
            source: request.target.source,
            endpoint: request.target.endpoint,
            billing: request.target.billing,
            chat_id: chat.chatId ?? null,
            character: chat.character ?? null,
            character_id: chat.characterId ?? null,
            group_id: chat.groupId ?? null,
            group: chat.group ?? null,
            message_id: Number.isInteger(Number(messageId)) && messageId !== null ? Number(messageId) : null,
            kind: type ?? request.type,
            outcome,
            prompt_tokens: Number.isFinite(prompt) ? prompt : null,
            completion_tokens: Number.isFinite(completionTokens) ? completionTokens : null,
        };
        this.queue.push(body);
        if (this.queue.length > MAX_QUEUE) this.queue.splice(0, this.queue.length - MAX_QUEUE);
        await this.drain();
    }

    /** Send what is queued; a report the service did not take stays queued for the next connection. */
    async drain() {
        while (this.queue.length) {
            const body = this.queue[0];
            try {
                const row = await this.client.call('/api/spend/generations', { method: 'POST', body });
                this.queue.shift();
                this.onReported(row);
            } catch (err) {
                if (err?.status === 400) {
                    console.warn('[NanoGPT Companion] the service refused a spend report:', err.message);
                    this.queue.shift(); // a malformed report will not get better by retrying
                    continue;
                }
                return; // not connected: kept for later
            }
        }
    }
}
