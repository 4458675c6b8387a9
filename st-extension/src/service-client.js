// Talks to the companion service. Knows nothing about ST's DOM: the adapter hands in what it needs
// (same-origin request headers) so a second transport can be slotted in without touching the views.
//
// Two transports share one interface { kind, request(path, init), eventsUrl(ticket) }:
//  - PluginTransport: ST's server plugin at /api/plugins/nanogpt-companion/<route>, same origin, ST's own
//    session + CSRF headers. Preferred when it answers, because it also works from a phone where the
//    service's loopback address is out of reach.
//  - DirectTransport: the service's URL from /user/files/nanogpt-companion.json with its bearer token.

import { API_VERSION, backoffDelay } from './format.js';

const log = (...args) => console.debug('[NanoGPT Companion]', ...args);

export const STATUS = Object.freeze({
    CONNECTING: 'connecting',
    CONNECTED: 'connected',
    NOT_RUNNING: 'not_running',
    TOKEN_REJECTED: 'token_rejected',
    TOO_OLD: 'too_old',
});

export const EVENT_NAMES = ['hello', 'catalog', 'account', 'alert', 'findings', 'fix', 'spend'];

export const BOOTSTRAP_PATH = '/user/files/nanogpt-companion.json';
export const PLUGIN_BASE = '/api/plugins/nanogpt-companion';

function isLoopbackHost(host) {
    return !host || host === 'localhost' || host === '[::1]' || host === '::1' || /^127\./.test(host);
}

export class ServiceError extends Error {
    constructor(status, code, message) {
        super(message);
        this.name = 'ServiceError';
        this.status = status;
        this.code = code;
    }
}

class DirectTransport {
    constructor(fetchImpl, base, token) {
        this.kind = 'direct';
        this.fetch = fetchImpl;
        this.base = base.replace(/\/+$/, '');
        this.token = token;
    }

    request(path, init = {}) {
        const headers = { ...(init.headers ?? {}), Authorization: `Bearer ${this.token}` };
        return this.fetch(this.base + path, { ...init, headers, cache: init.cache ?? 'no-store' });
    }

    eventsUrl(ticket) {
        return `${this.base}/api/events?ticket=${encodeURIComponent(ticket)}&client=extension`;
    }
}

class PluginTransport {
    constructor(fetchImpl, getHeaders) {
        this.kind = 'plugin';
        this.fetch = fetchImpl;
        this.getHeaders = getHeaders;
    }

    request(path, init = {}) {
        // ST checks its CSRF token on writes only (csrf-sync ignores GET, every supported version): the
        // catalogue's revalidation, a request on every page load, goes without ST's JSON + CSRF headers.
        const light = (init.method ?? 'GET') === 'GET' && init.cache === 'default';
        const headers = { ...(light ? {} : this.getHeaders?.() ?? {}), ...(init.headers ?? {}) };
        return this.fetch(PLUGIN_BASE + path, { ...init, headers, cache: init.cache ?? 'no-store' });
    }

    eventsUrl(ticket) {
        return `${PLUGIN_BASE}/api/events?ticket=${encodeURIComponent(ticket)}&client=extension`;
    }
}

/**
 * Connection lifecycle: bootstrap -> health/version check -> SSE; reconnects with capped exponential
 * backoff. When the service is absent it stays quiet: one status change, no thrown errors, no toasts,
 * and retries spaced out to a minute.
 */
export class ServiceClient {
    constructor({ fetchImpl, EventSourceImpl, getRequestHeaders, onStatus, onEvent, onBootstrap, baseDelayMs = 1000, maxDelayMs = 60000, usePlugin = true }) {
        this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
        this.EventSource = EventSourceImpl ?? globalThis.EventSource;
        this.getRequestHeaders = getRequestHeaders;
        this.onStatus = onStatus ?? (() => {});
        this.onEvent = onEvent ?? (() => {});
        this.onBootstrap = onBootstrap ?? (() => {});
        this.baseDelayMs = baseDelayMs;
        this.maxDelayMs = maxDelayMs;
        this.usePlugin = usePlugin;
        this.transport = null;
        this.status = STATUS.CONNECTING;
        this.detail = {};
        this.attempt = 0;
        this.timer = null;
        this.es = null;
        this.stopped = false;
        this.generation = 0;
    }

    setStatus(status, detail = {}) {
        const changed = status !== this.status || JSON.stringify(detail) !== JSON.stringify(this.detail);
        this.status = status;
        this.detail = detail;
        if (changed) this.onStatus(status, detail);
    }

    start() {
        this.stopped = false;
        this.connect();
    }

    stop() {
        this.stopped = true;
        this.generation++;
        clearTimeout(this.timer);
        this.closeStream();
    }

    /** Retry now (the user pressed "Retry", or the tab became visible again). */
    reconnectNow() {
        clearTimeout(this.timer);
        this.attempt = 0;
        this.closeStream();
        this.connect();
    }

    closeStream() {
        if (this.es) {
            this.es.close();
            this.es = null;
        }
    }

    scheduleReconnect() {
        if (this.stopped) return;
        clearTimeout(this.timer);
        const delay = backoffDelay(this.attempt++, this.baseDelayMs, this.maxDelayMs);
        this.timer = setTimeout(() => this.connect(), delay);
    }

    async connect() {
        const gen = ++this.generation;
        this.closeStream();
        let outcome;
        try {
            outcome = await this.establish();
        } catch (err) {
            // Network failures are the normal "service not running" case: never escalate to console.error.
            log('connect failed', err?.message ?? err);
            outcome = { status: STATUS.NOT_RUNNING };
        }
        if (gen !== this.generation || this.stopped) return;
        if (outcome.status !== STATUS.CONNECTED) {
            this.transport = outcome.status === STATUS.TOO_OLD ? outcome.transport ?? null : null;
            this.setStatus(outcome.status, outcome.detail ?? {});
            // A rejected token or an old service will not fix itself quickly; keep retrying slowly anyway
            // (the service may be restarted or upgraded) but never faster than the backoff allows.
            this.scheduleReconnect();
            return;
        }
        this.transport = outcome.transport;
        this.openStream(gen, outcome.ticket);
    }

    /**
     * Picks a transport. The bootstrap file is same-origin, so it is readable from any device. The plugin
     * is probed first only when it is likely to be there (the bootstrap says so, or ST is opened from a
     * non-loopback address where the service's 127.0.0.1 URL cannot work); otherwise only after the direct
     * path failed. That keeps a plain local setup free of a 404 per page load.
     */
    async establish() {
        const boot = await this.fetch(BOOTSTRAP_PATH, { cache: 'no-store' }).catch(() => null);
        const info = boot && boot.ok ? await boot.json().catch(() => null) : null;
        if (!info?.url || !info?.token) {
            return { status: STATUS.NOT_RUNNING, detail: { reason: boot && boot.ok ? 'bad_bootstrap' : 'no_bootstrap' } };
        }
        // Who we are talking as is known now, before the service answers: cached data can be shown.
        try {
            this.onBootstrap(info);
        } catch (err) {
            console.warn('[NanoGPT Companion] bootstrap handler failed', err);
        }
        const remotePage = !isLoopbackHost(globalThis.location?.hostname);
        let transport = null;
        let health = null;
        if (this.usePlugin && this.getRequestHeaders && (info.plugin === true || remotePage)) {
            transport = await this.probePlugin();
            health = transport?.health ?? null;
        }
        if (!transport) {
            const direct = new DirectTransport(this.fetch, info.url, info.token);
            const res = remotePage ? null : await this.fetch(`${direct.base}/health`, { cache: 'no-store' }).catch(() => null);
            if (res && res.ok) {
                transport = direct;
                health = await res.json().catch(() => ({}));
            } else if (this.usePlugin && this.getRequestHeaders && info.plugin !== true && !remotePage) {
                transport = await this.probePlugin();
                health = transport?.health ?? null;
            }
            if (!transport && this.pluginRefusal) {
                // The plugin is there but refuses this page's host name (its DNS-rebinding guard): saying
                // "not running" would send the user to restart a service that runs fine.
                return { status: STATUS.NOT_RUNNING, detail: { reason: 'bad_host', host: globalThis.location?.hostname ?? '', message: this.pluginRefusal } };
            }
            if (!transport) return { status: STATUS.NOT_RUNNING, detail: { reason: 'unreachable', url: direct.base } };
        }
        if (!(Number(health?.api_version) >= API_VERSION)) {
            return { status: STATUS.TOO_OLD, detail: { version: health?.version ?? null, api_version: health?.api_version ?? null }, transport };
        }
        const ticketRes = await transport.request('/api/events/ticket', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
        if (ticketRes.status === 401 || ticketRes.status === 403) return { status: STATUS.TOKEN_REJECTED, detail: { via: transport.kind } };
        if (!ticketRes.ok) return { status: STATUS.NOT_RUNNING, detail: { reason: `http_${ticketRes.status}` } };
        const { ticket } = await ticketRes.json();
        this.version = health?.version ?? null;
        return { status: STATUS.CONNECTED, transport, ticket };
    }

    async probePlugin() {
        // Negative answers are remembered for a while so reconnect loops do not re-probe ST every time.
        if (this.pluginMissUntil && Date.now() < this.pluginMissUntil) return null;
        const res = await this.fetch(`${PLUGIN_BASE}/health`, { headers: this.getRequestHeaders(), cache: 'no-store' }).catch(() => null);
        const body = res ? await res.json().catch(() => null) : null;
        const health = res && res.ok ? body : null;
        this.pluginRefusal = res?.status === 421 && body?.error?.code === 'bad_host' ? String(body.error.message ?? '') : null;
        if (!health || health.status !== 'ok') {
            // A JSON error from a gateway status is the plugin itself saying the service is down: the plugin
            // is there, so keep probing it on every retry, or a phone would stay offline for minutes after
            // the service came back. Anything else (ST's 404, no answer) means no plugin.
            const pluginAnswered = res && res.status >= 502 && res.status <= 504 && typeof body?.error?.code === 'string';
            if (!pluginAnswered) this.pluginMissUntil = Date.now() + 5 * 60 * 1000;
            return null;
        }
        const t = new PluginTransport(this.fetch, this.getRequestHeaders);
        t.health = health;
        return t;
    }

    openStream(gen, ticket) {
        const es = new this.EventSource(this.transport.eventsUrl(ticket));
        this.es = es;
        this.hello = null;
        let opened = false;
        const markOpen = () => {
            if (opened || gen !== this.generation) return;
            opened = true;
            this.attempt = 0;
            this.setStatus(STATUS.CONNECTED, { via: this.transport.kind, version: this.version });
        };
        // Connected on the first event, not on `open`: the service sends `hello` at once, and what it says
        // (the catalogue's current ETag) must be known when the page starts loading its data.
        for (const name of EVENT_NAMES) {
            es.addEventListener(name, (ev) => {
                if (gen !== this.generation) return;
                let data = null;
                try {
                    data = JSON.parse(ev.data);
                } catch {
                    markOpen();
                    log('ignoring malformed event', name);
                    return;
                }
                if (name === 'hello') this.hello = data;
                markOpen();
                try {
                    this.onEvent(name, data);
                } catch (err) {
                    console.warn('[NanoGPT Companion] event handler failed', name, err);
                }
            });
        }
        es.onerror = () => {
            if (gen !== this.generation) return;
            // EventSource retries on its own with a reused (now spent) ticket; take over instead.
            this.closeStream();
            this.setStatus(this.status === STATUS.CONNECTED ? STATUS.CONNECTING : STATUS.NOT_RUNNING, { reason: 'stream_closed' });
            this.scheduleReconnect();
        };
    }

    /** A text answer (e.g. CSV) from the service; errors as for ``call``. */
    async text(path) {
        if (!this.transport) throw new ServiceError(0, 'not_connected', 'The companion service is not connected.');
        let res;
        try {
            res = await this.transport.request(path, { method: 'GET' });
        } catch {
            throw new ServiceError(0, 'unreachable', 'The companion service did not answer.');
        }
        if (!res.ok) {
            const data = await res.json().catch(() => null);
            throw new ServiceError(res.status, data?.error?.code ?? 'http_error', data?.error?.message ?? `HTTP ${res.status}`);
        }
        return res.text();
    }

    /** JSON request to the service; throws ServiceError with the contract's error code. */
    async call(path, { method = 'GET', body } = {}) {
        const init = { method };
        if (body !== undefined) {
            init.body = JSON.stringify(body);
            init.headers = { 'Content-Type': 'application/json' };
        }
        return (await this.send(path, init)).data;
    }

    /**
     * GET through the browser's HTTP cache: the service marks the catalogue `no-cache` with an ETag, so
     * the browser revalidates its copy on every call (a 304 on the wire while nothing changed) and hands
     * us the body either way. `etag` lets the caller skip reading a body it already holds.
     *
     * Why not our own If-None-Match: a request with it bypasses Chromium's preflight cache (like any
     * non-default cache mode), so every page load would pay a CORS preflight on the direct path, doubling
     * what an unchanged catalogue costs on the wire.
     */
    async getCached(path) {
        const { res } = await this.send(path, { cache: 'default' }, false);
        return { etag: res.headers.get('ETag'), json: () => res.json() };
    }

    async send(path, init, readBody = true) {
        if (!this.transport) throw new ServiceError(0, 'not_connected', 'The companion service is not connected.');
        let res;
        try {
            res = await this.transport.request(path, init);
        } catch {
            throw new ServiceError(0, 'unreachable', 'The companion service did not answer.');
        }
        if (res.ok && !readBody) return { res, data: null };
        const data = await res.json().catch(() => null);
        if (!res.ok) {
            if (res.status === 401) this.setStatus(STATUS.TOKEN_REJECTED, { via: this.transport.kind });
            throw new ServiceError(res.status, data?.error?.code ?? 'http_error', data?.error?.message ?? `HTTP ${res.status}`);
        }
        return { res, data };
    }
}
