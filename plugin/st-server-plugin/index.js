'use strict';

/*
 * NanoGPT Companion: SillyTavern server plugin.
 *
 * Why it exists: when SillyTavern is opened from a phone or another computer, the browser cannot reach the
 * companion service on the server's loopback interface. This plugin runs inside ST's own Node process, so it
 * sits behind ST's login, whitelist and CSRF protection, and forwards `/api/plugins/nanogpt-companion/<rest>`
 * to the service's `/<rest>` with the logged-in user's own bearer token. No new secret exists: the token is
 * the one the service already wrote into that user's data folder.
 *
 * Only Node built-ins are used so that installing the plugin is a plain folder copy (no npm step inside ST).
 */

const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const { URL } = require('node:url');

const info = {
    id: 'nanogpt-companion',
    name: 'NanoGPT Companion',
    description: 'Forwards the NanoGPT Companion extension\'s calls to the local companion service, so it also works when SillyTavern is opened from another device.',
};

const LOG_PREFIX = '[nanogpt-companion]';
const TOKEN_FILE = path.join('user', 'files', 'nanogpt-companion.json');
const START_HINT = 'Start it with: nanogpt-companion serve --sillytavern <path>';

const DEFAULTS = Object.freeze({
    /** Whole-exchange limit for ordinary (non-SSE) calls; the catalogue refresh is the slowest route. */
    timeoutMs: 30_000,
    /** SSE streams carry a ping every 15 s; a silent stream for this long is dead. */
    sseIdleMs: 90_000,
    /** Request bodies are small JSON commands (fix ids, policies); anything big is a mistake or abuse. */
    maxRequestBytes: 1024 * 1024,
    /** The full catalogue is about 1 MB; leave headroom but never buffer unbounded data in ST's process. */
    maxResponseBytes: 16 * 1024 * 1024,
    /** The token file is tiny; refuse to parse a huge file someone uploaded in its place. */
    maxTokenFileBytes: 64 * 1024,
    /** Bounded so that a server with many users cannot grow the cache forever. */
    tokenCacheEntries: 256,
});

const FORWARDED_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

/*
 * Allow-lists instead of deny-lists: the browser's cookies, ST's CSRF token, Origin and Host must never reach
 * the service, and whatever new header a browser invents later should not either.
 */
const REQUEST_HEADERS = ['accept', 'accept-language', 'content-type', 'last-event-id', 'if-none-match', 'if-modified-since'];
const RESPONSE_HEADERS = ['content-type', 'cache-control', 'etag', 'last-modified', 'retry-after', 'content-language'];

/**
 * Agents created by init(); exit() takes no arguments in ST's contract, so the only way to close them is to
 * remember them at module level. Nothing else is kept here.
 */
const liveAgents = new Set();

class ProxyError extends Error {
    /**
     * @param {number} status HTTP status for the browser
     * @param {string} code snake_case error code (same style as the service's errors)
     * @param {string} message plain sentence, never containing a token or user data
     */
    constructor(status, code, message) {
        super(message);
        this.status = status;
        this.code = code;
    }
}

function serviceUnavailable(detail) {
    return new ProxyError(503, 'service_unavailable', `${detail} ${START_HINT}`);
}

/**
 * The token file lives in a folder users can write through ST's file upload API, so its `url` is untrusted:
 * only plain-HTTP loopback targets are accepted, otherwise ST's server could be made to call arbitrary hosts.
 * @param {unknown} raw
 * @returns {{hostname: string, port: number}}
 */
function parseServiceUrl(raw) {
    if (typeof raw !== 'string' || raw.length === 0 || raw.length > 200) {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the token file is missing or invalid.');
    }
    let url;
    try {
        url = new URL(raw);
    } catch {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the token file is not a valid URL.');
    }
    if (url.protocol !== 'http:' || url.username || url.password) {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the token file must be a plain http:// loopback address.');
    }
    const hostname = loopbackAddress(url.hostname);
    if (hostname === null) {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the token file does not point at this machine (loopback only); refusing to forward.');
    }
    const port = url.port ? Number(url.port) : 80;
    return { hostname, port };
}

/**
 * Returns the literal address to connect to, or null when the host is not loopback. `localhost` is pinned to
 * 127.0.0.1 because the service binds IPv4 loopback and resolving the name could pick ::1 (or whatever an
 * edited hosts file says).
 * @param {string} hostname as parsed by URL (IPv6 in brackets, IPv4 normalised)
 * @returns {string | null}
 */
function loopbackAddress(hostname) {
    const host = hostname.toLowerCase();
    if (host === 'localhost') return '127.0.0.1';
    if (host === '[::1]') return '::1';
    // URL() already normalised IPv4 forms such as 0x7f.1 or 2130706433 into dotted quads.
    if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) return host;
    return null;
}

/**
 * Tokens go into a header; anything beyond the URL-safe/base64 alphabet could smuggle header syntax.
 * @param {unknown} token
 * @returns {string}
 */
function checkToken(token) {
    if (typeof token !== 'string' || !/^[A-Za-z0-9._~+/-]{16,512}=*$/.test(token)) {
        throw serviceUnavailable('The NanoGPT Companion token file for this user is invalid.');
    }
    return token;
}

/**
 * Only the service's own API surface is reachable; `.`/`..` segments are refused so that nothing can walk
 * out of it once a server normalises the path.
 * @param {string} rawUrl path + query relative to the plugin's mount point
 * @returns {string} the same path + query, to be sent verbatim
 */
function checkForwardPath(rawUrl) {
    const url = typeof rawUrl === 'string' ? rawUrl : '';
    const q = url.indexOf('?');
    const pathname = q === -1 ? url : url.slice(0, q);
    if (!pathname.startsWith('/') || pathname.startsWith('//') || /[\s\\]/.test(url)) {
        throw new ProxyError(400, 'bad_request', 'Invalid path.');
    }
    let decoded;
    try {
        decoded = decodeURIComponent(pathname);
    } catch {
        throw new ProxyError(400, 'bad_request', 'Invalid path encoding.');
    }
    if (decoded.split('/').some((seg) => seg === '.' || seg === '..')) {
        throw new ProxyError(400, 'bad_request', 'Invalid path.');
    }
    if (pathname !== '/health' && !pathname.startsWith('/api/')) {
        throw new ProxyError(404, 'not_found', 'Not a NanoGPT Companion route.');
    }
    return url;
}

/** The pathname without the query: queries may hold search terms or SSE tickets, which never go to logs. */
function logPath(rawUrl) {
    const url = typeof rawUrl === 'string' ? rawUrl : '';
    const q = url.indexOf('?');
    return (q === -1 ? url : url.slice(0, q)).slice(0, 100);
}

/**
 * Reads `{url, token}` from the user's token file, cached by (inode, size, mtime) so the file is parsed once
 * per change instead of on every call, while a token rotation or service move is still seen immediately.
 */
function createTokenReader(options) {
    const cache = new Map();
    return async function readServiceTarget(userRoot) {
        const file = path.join(userRoot, TOKEN_FILE);
        let stat;
        try {
            stat = await fs.promises.stat(file);
        } catch {
            cache.delete(file);
            throw serviceUnavailable('The NanoGPT Companion service has not set up this SillyTavern user yet (no token file).');
        }
        if (!stat.isFile() || stat.size > options.maxTokenFileBytes) {
            throw serviceUnavailable('The NanoGPT Companion token file for this user is invalid.');
        }
        const stamp = `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
        const hit = cache.get(file);
        if (hit && hit.stamp === stamp) return hit.target;
        let parsed;
        try {
            parsed = JSON.parse(await fs.promises.readFile(file, 'utf8'));
        } catch {
            throw serviceUnavailable('The NanoGPT Companion token file for this user could not be read.');
        }
        if (parsed === null || typeof parsed !== 'object') {
            throw serviceUnavailable('The NanoGPT Companion token file for this user is invalid.');
        }
        const target = { ...parseServiceUrl(parsed.url), token: checkToken(parsed.token) };
        if (cache.size >= options.tokenCacheEntries) cache.clear();
        cache.set(file, { stamp, target });
        return target;
    };
}

/**
 * Produces the bytes to send upstream. ST's global express.json() has usually consumed the stream already
 * (`req._body` is body-parser's marker), so the parsed value is re-serialised; otherwise the raw stream is read,
 * with the cap enforced while reading so an endless upload is cut off early.
 * @returns {Promise<{body: Buffer | null, contentType: string | undefined}>}
 */
async function readRequestBody(req, options) {
    const method = req.method.toUpperCase();
    const contentType = typeof req.headers['content-type'] === 'string' ? req.headers['content-type'] : undefined;
    const tooLarge = () => new ProxyError(413, 'payload_too_large', `Request body is larger than ${options.maxRequestBytes} bytes.`);
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > options.maxRequestBytes) throw tooLarge();
    if (req._body) {
        let body;
        if (Buffer.isBuffer(req.body)) body = req.body;
        else if (typeof req.body === 'string') body = Buffer.from(req.body, 'utf8');
        else body = Buffer.from(JSON.stringify(req.body ?? null), 'utf8');
        if (body.length > options.maxRequestBytes) throw tooLarge();
        const isJson = !Buffer.isBuffer(req.body) && typeof req.body !== 'string';
        return { body, contentType: isJson ? 'application/json' : contentType };
    }
    if (method === 'GET' || method === 'HEAD' || req.readableEnded) {
        return { body: null, contentType: undefined };
    }
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
        size += chunk.length;
        if (size > options.maxRequestBytes) throw tooLarge();
        chunks.push(chunk);
    }
    if (size === 0) return { body: null, contentType: undefined };
    return { body: Buffer.concat(chunks), contentType };
}

function sendError(res, err) {
    if (res.headersSent) {
        // Mid-stream there is no way to send a status any more; cutting the connection is the honest signal.
        res.destroy();
        return;
    }
    res.status(err.status).set('Cache-Control', 'no-store').json({ error: { code: err.code, message: err.message } });
}

/** Maps a socket-level failure to the browser-facing error without echoing internals. */
function upstreamFailure(err) {
    if (err instanceof ProxyError) return err;
    if (err && err.code === 'ECONNREFUSED') {
        return serviceUnavailable('The NanoGPT Companion service is not running.');
    }
    return new ProxyError(502, 'bad_gateway', 'The NanoGPT Companion service did not answer properly.');
}

function isEventStream(upstreamRes) {
    return String(upstreamRes.headers['content-type'] || '').toLowerCase().startsWith('text/event-stream');
}

function copyResponseHeaders(upstreamRes, res) {
    for (const name of RESPONSE_HEADERS) {
        const value = upstreamRes.headers[name];
        if (value !== undefined) res.set(name, value);
    }
}

/**
 * SSE goes straight through chunk by chunk. `no-transform` makes ST's compression middleware leave the
 * stream alone (it would otherwise buffer it), `X-Accel-Buffering` does the same for an nginx in front, and
 * `res.flush()` exists exactly when a compression layer is present.
 */
function pipeEventStream(upstreamReq, upstreamRes, req, res, options) {
    res.status(upstreamRes.statusCode);
    copyResponseHeaders(upstreamRes, res);
    res.set('Cache-Control', 'no-cache, no-transform');
    res.set('X-Accel-Buffering', 'no');
    if (typeof res.flushHeaders === 'function') res.flushHeaders();
    if (req.socket && typeof req.socket.setNoDelay === 'function') req.socket.setNoDelay(true);

    upstreamReq.setTimeout(options.sseIdleMs, () => upstreamReq.destroy(new Error('sse idle')));
    const abortUpstream = () => upstreamReq.destroy();
    res.on('close', abortUpstream);
    upstreamRes.on('data', (chunk) => {
        res.write(chunk);
        if (typeof res.flush === 'function') res.flush();
    });
    upstreamRes.on('end', () => {
        res.off('close', abortUpstream);
        res.end();
    });
    upstreamRes.on('error', () => res.destroy());
    upstreamRes.on('aborted', () => res.destroy());
}

/**
 * Ordinary responses are buffered (bounded) so that the status can still become a clean JSON error when the
 * upstream dies halfway or sends something that is not the service's JSON.
 */
function bufferResponse(upstreamRes, options) {
    return new Promise((resolve, reject) => {
        const declared = Number(upstreamRes.headers['content-length']);
        const tooLarge = () => new ProxyError(502, 'upstream_response_too_large', 'The service answered with more data than this plugin forwards.');
        if (Number.isFinite(declared) && declared > options.maxResponseBytes) {
            upstreamRes.destroy();
            reject(tooLarge());
            return;
        }
        const chunks = [];
        let size = 0;
        upstreamRes.on('data', (chunk) => {
            size += chunk.length;
            if (size > options.maxResponseBytes) {
                upstreamRes.destroy();
                reject(tooLarge());
                return;
            }
            chunks.push(chunk);
        });
        upstreamRes.on('end', () => resolve(Buffer.concat(chunks)));
        upstreamRes.on('aborted', () => reject(new ProxyError(502, 'bad_gateway', 'The service closed the connection mid-response.')));
        upstreamRes.on('error', (err) => reject(upstreamFailure(err)));
    });
}

function sendBuffered(upstreamRes, body, res) {
    const status = upstreamRes.statusCode || 502;
    const type = String(upstreamRes.headers['content-type'] || '');
    if (status >= 400 && !type.toLowerCase().includes('json')) {
        // Keep the extension's single error format even when something other than the service answered.
        throw new ProxyError(status >= 500 ? 502 : status, status >= 500 ? 'bad_gateway' : 'upstream_error',
            `The service answered with HTTP ${status}.`);
    }
    res.status(status);
    copyResponseHeaders(upstreamRes, res);
    res.end(body);
}

/**
 * The request handler for every method and path under the plugin's mount point.
 * @param {{agent: http.Agent} & typeof DEFAULTS} options
 */
function createHandler(options) {
    const readServiceTarget = createTokenReader(options);

    return async function forward(req, res) {
        const started = process.hrtime.bigint();
        const method = String(req.method || 'GET').toUpperCase();
        const where = `${method} ${logPath(req.url)}`;
        try {
            if (!FORWARDED_METHODS.has(method)) throw new ProxyError(405, 'method_not_allowed', 'Method not allowed.');
            const forwardPath = checkForwardPath(req.url);
            const userRoot = req.user && req.user.directories && req.user.directories.root;
            if (typeof userRoot !== 'string' || userRoot.length === 0) {
                throw new ProxyError(403, 'forbidden', 'No SillyTavern user is logged in.');
            }
            const target = await readServiceTarget(userRoot);
            const { body, contentType } = await readRequestBody(req, options);

            const headers = {};
            for (const name of REQUEST_HEADERS) {
                const value = req.headers[name];
                if (typeof value === 'string') headers[name] = value;
            }
            if (contentType) headers['content-type'] = contentType;
            else delete headers['content-type'];
            headers.authorization = `Bearer ${target.token}`;
            headers.host = target.hostname.includes(':') ? `[${target.hostname}]:${target.port}` : `${target.hostname}:${target.port}`;
            if (body) headers['content-length'] = String(body.length);

            await new Promise((resolve, reject) => {
                const upstreamReq = http.request({
                    host: target.hostname,
                    port: target.port,
                    method,
                    path: forwardPath,
                    headers,
                    agent: options.agent,
                }, (upstreamRes) => {
                    if (isEventStream(upstreamRes)) {
                        clearTimeout(deadline);
                        pipeEventStream(upstreamReq, upstreamRes, req, res, options);
                        upstreamRes.on('close', resolve);
                        return;
                    }
                    bufferResponse(upstreamRes, options)
                        .then((buffered) => {
                            clearTimeout(deadline);
                            sendBuffered(upstreamRes, buffered, res);
                            resolve();
                        })
                        .catch((err) => {
                            clearTimeout(deadline);
                            reject(err);
                        });
                });
                const deadline = setTimeout(() => {
                    upstreamReq.destroy();
                    reject(new ProxyError(504, 'gateway_timeout', 'The NanoGPT Companion service did not answer in time.'));
                }, options.timeoutMs);
                // A browser that gives up (closed tab, navigation) should not keep the service busy.
                const onClientGone = () => {
                    if (!res.writableEnded) upstreamReq.destroy();
                };
                res.once('close', onClientGone);
                upstreamReq.on('error', (err) => {
                    clearTimeout(deadline);
                    reject(upstreamFailure(err));
                });
                upstreamReq.end(body || undefined);
            });
        } catch (err) {
            const proxyErr = upstreamFailure(err);
            if (proxyErr.status >= 500) {
                const ms = Number(process.hrtime.bigint() - started) / 1e6;
                console.warn(`${LOG_PREFIX} ${where} -> ${proxyErr.status} ${proxyErr.code} (${ms.toFixed(0)} ms)`);
            }
            if (!res.writableEnded && !res.destroyed) sendError(res, proxyErr);
        }
    };
}

/**
 * ST calls init(router) once at start-up. The optional second argument exists for the test harness (short
 * limits); ST never passes it.
 * @param {import('express').Router} router
 * @param {Partial<typeof DEFAULTS>} [overrides]
 */
async function init(router, overrides = {}) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    liveAgents.add(agent);
    const options = { ...DEFAULTS, ...overrides, agent };
    // A regular-expression route works on Express 4 and 5 alike and counts as a route for ST's mount check.
    router.all(/.*/, createHandler(options));
}

async function exit() {
    for (const agent of liveAgents) agent.destroy();
    liveAgents.clear();
}

module.exports = {
    info,
    init,
    exit,
    // Exposed for unit tests; not part of ST's plugin contract.
    _internals: { parseServiceUrl, loopbackAddress, checkForwardPath, checkToken, DEFAULTS },
};
