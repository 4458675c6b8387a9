'use strict';

/*
 * NanoGPT Companion: SillyTavern server plugin.
 *
 * Why it exists: when SillyTavern is opened from a phone or another computer, the browser cannot reach the
 * companion service on the server's loopback interface. This plugin runs inside ST's own Node process, so it
 * sits behind ST's login, whitelist and CSRF protection, and forwards `/api/plugins/nanogpt-companion/<rest>`
 * to the service's `/<rest>` with the logged-in user's own bearer token (from that user's token file).
 *
 * Where the service is, and how to start it, comes from `<ST>/plugins/nanogpt-companion.service.json`, which
 * the installer and the service write and no ST user can (ST's file APIs only write inside the data root;
 * the per-user token file there is uploadable, so its `url` is never used). Every new connection to the
 * service is verified before anything is sent on it: the service must answer a random challenge with an HMAC
 * under the secret in that file, which a process that merely took the port cannot do.
 *
 * When the link file carries a start command, the plugin starts the service with ST (unless a verified
 * service already answers) and stops it in exit(), which ST awaits on SIGINT/SIGTERM.
 *
 * Only Node built-ins are used so that installing the plugin is a plain folder copy (no npm step inside ST).
 */

const http = require('node:http');
const net = require('node:net');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { createRequire } = require('node:module');
const { URL } = require('node:url');

const info = {
    id: 'nanogpt-companion',
    name: 'NanoGPT Companion',
    description: 'Forwards the NanoGPT Companion extension\'s calls to the local companion service, so it also works when SillyTavern is opened from another device.',
};

const LOG_PREFIX = '[nanogpt-companion]';
const TOKEN_FILE = path.join('user', 'files', 'nanogpt-companion.json');
const LINK_FILE = 'nanogpt-companion.service.json';
const CHALLENGE_HEADER = 'X-NanoGPT-Companion-Challenge';
const PROOF_HEADER = 'x-nanogpt-companion-proof';
const PROOF_CONTEXT = 'nanogpt-companion/plugin-proof/v1\n';
const START_HINT = 'Start it with: nanogpt-companion serve --sillytavern <path>';
const LINK_HINT = 'Run: nanogpt-companion install-extension --sillytavern <path> --server-plugin';

const DEFAULTS = Object.freeze({
    /** Whole-exchange limit for ordinary (non-SSE) calls; the catalogue refresh is the slowest route. */
    timeoutMs: 30_000,
    /** SSE streams carry a ping every 15 s; a silent stream for this long is dead. */
    sseIdleMs: 90_000,
    /** Request bodies are small JSON commands (fix ids, policies); anything big is a mistake or abuse. */
    maxRequestBytes: 1024 * 1024,
    /** The full catalogue is about 1 MB; leave headroom but never buffer unbounded data in ST's process. */
    maxResponseBytes: 16 * 1024 * 1024,
    /** Token and link files are tiny; refuse to parse a huge file in their place. */
    maxTokenFileBytes: 64 * 1024,
    /** Bounded so that a server with many users cannot grow the cache forever. */
    tokenCacheEntries: 256,
    /** Connect + challenge + answer on a new connection to the service; it answers from memory. */
    handshakeTimeoutMs: 5_000,
    /** How long a service the plugin started may take to answer before the plugin says so in ST's log. */
    readyTimeoutMs: 60_000,
    /** exit(): time the service gets to shut down cleanly after SIGTERM before it is killed. */
    stopTimeoutMs: 10_000,
    /** The service log is moved to `<log>.1` before a start when it is larger than this. */
    maxLogBytes: 5 * 1024 * 1024,
    /** Start the service with ST when the link file has a start command. */
    autostart: true,
    /** ST's folder; ST's server.js chdir()s there before loading plugins. */
    stDir: undefined,
});

const FORWARDED_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

/*
 * Allow-lists instead of deny-lists: the browser's cookies, ST's CSRF token, Origin and Host must never reach
 * the service, and whatever new header a browser invents later should not either. Validators and encodings
 * pass both ways untouched (the bytes are never decompressed or recompressed here), so a 304 or a gzip body
 * from the service reaches the browser as the service sent it.
 */
const REQUEST_HEADERS = ['accept', 'accept-encoding', 'accept-language', 'content-type', 'last-event-id',
    'if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since'];
const RESPONSE_HEADERS = ['content-type', 'content-encoding', 'content-language', 'cache-control', 'etag',
    'last-modified', 'expires', 'vary', 'retry-after'];

/**
 * State that exit() needs: ST calls exit() without arguments, so what init() created is remembered here.
 * Nothing else is kept at module level.
 */
const live = { agents: new Set(), services: new Set() };

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

function serviceUnavailable(detail, hint = START_HINT) {
    return new ProxyError(503, 'service_unavailable', hint ? `${detail} ${hint}` : detail);
}

// ------------------------------------------------------------------------------------------ the link file

/**
 * The link file is written by our installer and service, but it is still input: only plain-HTTP loopback
 * targets are accepted, so that nothing can make ST's server call another host.
 * @param {unknown} raw
 * @returns {{hostname: string, port: number}}
 */
function parseServiceUrl(raw) {
    if (typeof raw !== 'string' || raw.length === 0 || raw.length > 200) {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the link file is missing or invalid.');
    }
    let url;
    try {
        url = new URL(raw);
    } catch {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the link file is not a valid URL.');
    }
    if (url.protocol !== 'http:' || url.username || url.password) {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the link file must be a plain http:// loopback address.');
    }
    const hostname = loopbackAddress(url.hostname);
    if (hostname === null) {
        throw new ProxyError(502, 'bad_service_url', 'The service URL in the link file does not point at this machine (loopback only); refusing to forward.');
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
 * @param {unknown} raw the `autostart` member of the link file
 * @returns {{command: string[], log: string} | null}
 */
function parseAutostart(raw) {
    if (raw === null || raw === undefined) return null;
    const ok = typeof raw === 'object' && Array.isArray(raw.command) && raw.command.length > 0
        && raw.command.every((part) => typeof part === 'string' && part.length > 0 && !part.includes('\0'))
        && typeof raw.log === 'string' && raw.log.length > 0 && path.isAbsolute(raw.log);
    if (!ok) throw new ProxyError(502, 'bad_link_file', 'The start command in the link file is invalid.');
    return { command: raw.command.slice(), log: raw.log };
}

/**
 * Reads the link file, cached by (inode, size, mtime) so it is parsed once per change while a service that
 * moved to another port, or a new secret, is seen on the next call.
 */
function createLinkReader(linkFile, options) {
    let cached = null;
    return async function readLink() {
        let stat;
        try {
            stat = await fs.promises.lstat(linkFile);
        } catch {
            cached = null;
            throw serviceUnavailable(`The plugin does not know where the NanoGPT Companion service is (no ${LINK_FILE} beside it).`, LINK_HINT);
        }
        if (!stat.isFile() || stat.size > options.maxTokenFileBytes) {
            throw new ProxyError(502, 'bad_link_file', `${LINK_FILE} is not a small regular file.`);
        }
        const stamp = `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
        if (cached && cached.stamp === stamp) return cached.link;
        let parsed;
        try {
            parsed = JSON.parse(await fs.promises.readFile(linkFile, 'utf8'));
        } catch {
            throw new ProxyError(502, 'bad_link_file', `${LINK_FILE} could not be read.`);
        }
        if (parsed === null || typeof parsed !== 'object' || typeof parsed.secret !== 'string' || !/^[A-Za-z0-9_-]{43,128}$/.test(parsed.secret)) {
            throw new ProxyError(502, 'bad_link_file', `${LINK_FILE} is invalid.`);
        }
        const link = { ...parseServiceUrl(parsed.url), secret: parsed.secret, url: parsed.url, autostart: parseAutostart(parsed.autostart) };
        cached = { stamp, link };
        return link;
    };
}

// -------------------------------------------------------------------------------- verified connections

class HandshakeError extends Error {
    constructor(message) {
        super(message);
        this.code = 'ENANOGPTUNVERIFIED';
    }
}

function expectedProof(secret, challenge) {
    return crypto.createHmac('sha256', secret).update(PROOF_CONTEXT + challenge).digest('hex');
}

/**
 * Asks the service on `socket` to prove it holds the link file's secret: `HEAD /health` with a fresh random
 * challenge; the answer must carry the HMAC of it. Raw HTTP on purpose: the verified socket is then handed to
 * the HTTP agent and carries the real requests, so nothing is ever sent on a connection that did not prove
 * itself (a keep-alive socket can only belong to the process that answered the challenge).
 * @returns {Promise<void>} resolves when verified; rejects with a HandshakeError or the socket's error
 */
function handshake(socket, target, timeoutMs) {
    return new Promise((resolve, reject) => {
        const challenge = crypto.randomBytes(32).toString('hex');
        const hostHeader = target.hostname.includes(':') ? `[${target.hostname}]:${target.port}` : `${target.hostname}:${target.port}`;
        let received = Buffer.alloc(0);
        const finish = (err) => {
            clearTimeout(timer);
            socket.off('data', onData);
            socket.off('error', finish);
            socket.off('close', onClose);
            if (err) {
                socket.destroy();
                reject(err);
            } else {
                // Until the HTTP client attaches its own listeners (next tick), an error must not be
                // unhandled: that would bring down ST's whole process.
                socket.on('error', () => {});
                resolve();
            }
        };
        const onClose = () => finish(new HandshakeError('closed the connection without answering the challenge'));
        const onData = (chunk) => {
            received = Buffer.concat([received, chunk]);
            const end = received.indexOf('\r\n\r\n');
            if (end === -1) {
                if (received.length > 16 * 1024) finish(new HandshakeError('sent an oversized answer'));
                return;
            }
            // HEAD has no body: anything after the header block is not an HTTP answer to our question.
            if (received.length !== end + 4) return finish(new HandshakeError('sent more than a HEAD answer'));
            const lines = received.subarray(0, end).toString('latin1').split('\r\n');
            const status = /^HTTP\/1\.[01] (\d{3}) /.exec(lines[0] + ' ');
            if (!status || status[1] !== '200') return finish(new HandshakeError(`answered ${lines[0].slice(0, 40)}`));
            const headers = new Map();
            for (const line of lines.slice(1)) {
                const colon = line.indexOf(':');
                if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
            }
            if (String(headers.get('connection') || '').toLowerCase() === 'close') {
                return finish(new HandshakeError('closes the connection after answering'));
            }
            const given = Buffer.from(String(headers.get(PROOF_HEADER) || ''), 'utf8');
            const wanted = Buffer.from(expectedProof(target.secret, challenge), 'utf8');
            if (given.length !== wanted.length || !crypto.timingSafeEqual(given, wanted)) {
                return finish(new HandshakeError('did not prove it holds the link file\'s secret'));
            }
            finish(null);
        };
        const timer = setTimeout(() => finish(new HandshakeError('did not answer the challenge in time')), timeoutMs);
        socket.on('data', onData);
        socket.on('error', finish);
        socket.on('close', onClose);
        socket.write(`HEAD /health HTTP/1.1\r\nHost: ${hostHeader}\r\n${CHALLENGE_HEADER}: ${challenge}\r\nConnection: keep-alive\r\n\r\n`);
    });
}

/** Opens a TCP connection and runs the handshake on it; the whole thing within `timeoutMs`. */
function connectVerified(target, timeoutMs) {
    return new Promise((resolve, reject) => {
        const socket = net.connect({ host: target.hostname, port: target.port });
        socket.setNoDelay(true);
        const timer = setTimeout(() => {
            socket.destroy();
            reject(new HandshakeError('did not accept the connection in time'));
        }, timeoutMs);
        const onError = (err) => {
            clearTimeout(timer);
            reject(err);
        };
        socket.once('error', onError);
        socket.once('connect', () => {
            clearTimeout(timer);
            socket.off('error', onError);
            handshake(socket, target, timeoutMs).then(() => resolve(socket), reject);
        });
    });
}

/**
 * An HTTP agent whose every new socket has passed the handshake. The target's secret travels in the request
 * options (`nanogptTarget`), which Node hands to createConnection unchanged.
 */
class VerifiedAgent extends http.Agent {
    constructor(options) {
        super({ keepAlive: true, maxSockets: 64 });
        this.handshakeTimeoutMs = options.handshakeTimeoutMs;
    }

    createConnection(options, callback) {
        const target = options.nanogptTarget;
        if (!target) {
            callback(new HandshakeError('no target'));
            return undefined;
        }
        connectVerified(target, this.handshakeTimeoutMs).then((socket) => callback(null, socket), (err) => callback(err));
        return undefined;
    }
}

/**
 * What answers at the link file's address: our service ('ours'), nothing ('down'), or something that is
 * not our service ('foreign', with the reason).
 * @returns {Promise<{state: 'ours' | 'down' | 'foreign', reason?: string}>}
 */
async function probeService(target, timeoutMs) {
    try {
        const socket = await connectVerified(target, timeoutMs);
        socket.destroy();
        return { state: 'ours' };
    } catch (err) {
        // Only a refused connection means nobody listens; anything else might be a service that is busy or
        // a stranger, and starting a second copy next to either is wrong.
        if (err && err.code === 'ECONNREFUSED') return { state: 'down' };
        return { state: 'foreign', reason: err instanceof HandshakeError ? err.message : String(err && err.code || err) };
    }
}

// --------------------------------------------------------------------------------------------- Host check

/**
 * The hosts ST's own host whitelist would let through on purpose: ST's `hostWhitelist.hosts` (environment
 * variable first, then config.yaml, as ST's getConfigValue does; `src/middleware/hostWhitelist.js` in 1.13.5,
 * 1.18.0 and 1.19.0). Loopback names and IP literals are always allowed there and here.
 */
function readHostWhitelist(stDir) {
    const envValue = process.env.SILLYTAVERN_HOSTWHITELIST_HOSTS;
    if (envValue !== undefined) {
        try {
            const parsed = JSON.parse(envValue);
            return Array.isArray(parsed) ? parsed.filter((h) => typeof h === 'string') : [];
        } catch {
            return [];
        }
    }
    const configPath = findConfigPath(stDir);
    if (configPath === null) return [];
    let yaml;
    try {
        // ST's own YAML parser (a dependency of every ST version), found from ST's folder.
        yaml = createRequire(path.join(stDir, 'package.json'))('yaml');
    } catch {
        console.warn(`${LOG_PREFIX} cannot load SillyTavern's YAML parser; only loopback names and IP addresses may use the plugin.`);
        return [];
    }
    try {
        const config = yaml.parse(fs.readFileSync(configPath, 'utf8'));
        const hosts = config && config.hostWhitelist && config.hostWhitelist.hosts;
        return Array.isArray(hosts) ? hosts.filter((h) => typeof h === 'string') : [];
    } catch {
        return [];
    }
}

/**
 * ST resolves a relative `--configPath` against the directory it was started from, before it chdir()s to
 * its own folder; the shell's PWD still names that directory.
 */
function findConfigPath(stDir) {
    const given = globalThis.COMMAND_LINE_ARGS && globalThis.COMMAND_LINE_ARGS.configPath;
    const candidates = [];
    if (typeof given === 'string' && given) {
        if (path.isAbsolute(given)) candidates.push(given);
        else {
            if (process.env.PWD) candidates.push(path.resolve(process.env.PWD, given));
            candidates.push(path.resolve(stDir, given));
        }
    }
    candidates.push(path.join(stDir, 'config.yaml'));
    return candidates.find((p) => fs.existsSync(p)) ?? null;
}

/**
 * Same rules as ST's host-validation-middleware (`isHostAllowed`): IP literals, `localhost` and
 * `*.localhost`, and the whitelist's names (a leading dot allows the domain and its subdomains). A name a
 * DNS-rebinding page would use is none of these. A request without Host is refused: no browser sends one.
 * @param {string[]} whitelist
 */
function createHostCheck(whitelist) {
    const names = whitelist.map((h) => h.trim().toLowerCase()).filter(Boolean);
    return function hostAllowed(hostHeader) {
        if (typeof hostHeader !== 'string' || hostHeader.length === 0 || hostHeader.length > 300) return false;
        const host = hostHeader.trim().toLowerCase();
        if (host.startsWith('[')) {
            const end = host.indexOf(']');
            return end > 0 && net.isIP(host.slice(1, end)) === 6 && /^(:\d{1,5})?$/.test(host.slice(end + 1));
        }
        const colon = host.indexOf(':');
        const name = colon === -1 ? host : host.slice(0, colon);
        if (colon !== -1 && !/^\d{1,5}$/.test(host.slice(colon + 1))) return false;
        if (net.isIP(name) === 4) return true;
        if (name === 'localhost' || name.endsWith('.localhost')) return true;
        return names.some((allowed) => allowed === name || (allowed.startsWith('.') && (allowed.slice(1) === name || name.endsWith(allowed))));
    };
}

// ------------------------------------------------------------------------------------- per-user tokens

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
 * Reads the user's token from their token file, cached by (inode, size, mtime). The file is the user's
 * own (ST lets them upload over it), so only the token is taken from it: a forged token only fails.
 */
function createTokenReader(options) {
    const cache = new Map();
    return async function readToken(userRoot) {
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
        if (hit && hit.stamp === stamp) return hit.token;
        let parsed;
        try {
            parsed = JSON.parse(await fs.promises.readFile(file, 'utf8'));
        } catch {
            throw serviceUnavailable('The NanoGPT Companion token file for this user could not be read.');
        }
        if (parsed === null || typeof parsed !== 'object') {
            throw serviceUnavailable('The NanoGPT Companion token file for this user is invalid.');
        }
        const token = checkToken(parsed.token);
        if (cache.size >= options.tokenCacheEntries) cache.clear();
        cache.set(file, { stamp, token });
        return token;
    };
}

// ------------------------------------------------------------------------------------------ forwarding

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
function upstreamFailure(err, services) {
    if (err instanceof ProxyError) return err;
    if (err instanceof HandshakeError) {
        return new ProxyError(502, 'service_unverified',
            `Something answers at the NanoGPT Companion service's address but ${err.message}; refusing to send it anything. If it is the companion service, start it with --sillytavern <this SillyTavern folder> so it can prove itself; otherwise stop whatever else uses that port.`);
    }
    if (err && err.code === 'ECONNREFUSED') {
        if (services && [...services].some((s) => s.running())) {
            return serviceUnavailable('The NanoGPT Companion service is starting; try again in a moment.', null);
        }
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

function sendBuffered(method, upstreamRes, body, res) {
    const status = upstreamRes.statusCode || 502;
    const type = String(upstreamRes.headers['content-type'] || '');
    if (status >= 400 && !type.toLowerCase().includes('json')) {
        // Keep the extension's single error format even when something other than the service answered.
        throw new ProxyError(status >= 500 ? 502 : status, status >= 500 ? 'bad_gateway' : 'upstream_error',
            `The service answered with HTTP ${status}.`);
    }
    res.status(status);
    copyResponseHeaders(upstreamRes, res);
    // The body's own length (compressed or not, it is passed on byte for byte); a HEAD answer has none, so it
    // keeps the length the service declared for the GET.
    const declared = upstreamRes.headers['content-length'];
    if (method === 'HEAD') {
        if (declared !== undefined) res.set('Content-Length', declared);
    } else if (status !== 304 && status !== 204) {
        res.set('Content-Length', String(body.length));
    }
    res.end(method === 'HEAD' || status === 304 || status === 204 ? undefined : body);
}

/**
 * The request handler for every method and path under the plugin's mount point.
 */
function createHandler(options, readLink, hostAllowed, services) {
    const readToken = createTokenReader(options);

    return async function forward(req, res) {
        const started = process.hrtime.bigint();
        const method = String(req.method || 'GET').toUpperCase();
        const where = `${method} ${logPath(req.url)}`;
        try {
            if (!hostAllowed(req.headers.host)) {
                throw new ProxyError(421, 'bad_host',
                    'SillyTavern was addressed by a name that is not a loopback name, an IP address, or in hostWhitelist.hosts in SillyTavern\'s config.yaml, so the NanoGPT Companion plugin does not answer (DNS-rebinding guard). If you use that name on purpose, add it to hostWhitelist.hosts and restart SillyTavern.');
            }
            if (!FORWARDED_METHODS.has(method)) throw new ProxyError(405, 'method_not_allowed', 'Method not allowed.');
            const forwardPath = checkForwardPath(req.url);
            const userRoot = req.user && req.user.directories && req.user.directories.root;
            if (typeof userRoot !== 'string' || userRoot.length === 0) {
                throw new ProxyError(403, 'forbidden', 'No SillyTavern user is logged in.');
            }
            const target = await readLink();
            const token = await readToken(userRoot);
            const { body, contentType } = await readRequestBody(req, options);

            const headers = {};
            for (const name of REQUEST_HEADERS) {
                const value = req.headers[name];
                if (typeof value === 'string') headers[name] = value;
            }
            if (contentType) headers['content-type'] = contentType;
            else delete headers['content-type'];
            headers.authorization = `Bearer ${token}`;
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
                    nanogptTarget: target,
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
                            sendBuffered(method, upstreamRes, buffered, res);
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
                    reject(upstreamFailure(err, services));
                });
                upstreamReq.end(body || undefined);
            });
        } catch (err) {
            const proxyErr = upstreamFailure(err, services);
            if (proxyErr.status >= 500 || proxyErr.code === 'bad_host') {
                const ms = Number(process.hrtime.bigint() - started) / 1e6;
                console.warn(`${LOG_PREFIX} ${where} -> ${proxyErr.status} ${proxyErr.code} (${ms.toFixed(0)} ms)`);
            }
            if (!res.writableEnded && !res.destroyed) sendError(res, proxyErr);
        }
    };
}

// ------------------------------------------------------------------------------------------- autostart

function rotateLog(logPath, maxBytes) {
    try {
        if (fs.statSync(logPath).size > maxBytes) fs.renameSync(logPath, `${logPath}.1`);
    } catch {
        // No log yet, or it cannot be moved: appending to it is still right.
    }
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * A service process this plugin started. Only such a process is ever stopped by exit(); a service that was
 * already running (started by hand, by systemd, by another ST) is left alone.
 */
class StartedService {
    constructor(child, command, logPath, stopTimeoutMs) {
        this.child = child;
        this.command = command;
        this.logPath = logPath;
        this.stopTimeoutMs = stopTimeoutMs;
        this.stopping = false;
        this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    }

    running() {
        return this.child.exitCode === null && this.child.signalCode === null;
    }

    async stop() {
        const timeoutMs = this.stopTimeoutMs;
        if (!this.running()) return;
        this.stopping = true;
        this.child.kill('SIGTERM');
        const outcome = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
        if (outcome === null && this.running()) {
            console.warn(`${LOG_PREFIX} the NanoGPT Companion service (pid ${this.child.pid}) did not stop within ${timeoutMs} ms; killing it.`);
            this.child.kill('SIGKILL');
            await this.exited;
        }
        console.log(`${LOG_PREFIX} stopped the NanoGPT Companion service (pid ${this.child.pid}).`);
    }
}

function startService(autostart, options) {
    const { command, log } = autostart;
    fs.mkdirSync(path.dirname(log), { recursive: true });
    rotateLog(log, options.maxLogBytes);
    const fd = fs.openSync(log, 'a', 0o600);
    let child;
    try {
        fs.writeSync(fd, `\n--- ${new Date().toISOString()} started by SillyTavern's server plugin: ${JSON.stringify(command)}\n`);
        child = spawn(command[0], command.slice(1), {
            cwd: options.stDir,
            stdio: ['ignore', fd, fd],
            env: { ...process.env, PYTHONUNBUFFERED: '1' },
            windowsHide: true,
        });
    } finally {
        fs.closeSync(fd); // the child holds its own copy
    }
    const service = new StartedService(child, command, log, options.stopTimeoutMs);
    child.once('error', (err) => {
        console.error(`${LOG_PREFIX} could not start the NanoGPT Companion service (${err.code || err.message}): ${command[0]}. ${LINK_HINT}`);
    });
    child.once('exit', (code, signal) => {
        if (!service.stopping) {
            console.warn(`${LOG_PREFIX} the NanoGPT Companion service exited (${signal || `code ${code}`}); see ${log}.`);
        }
    });
    return service;
}

/** Logs once when a started service answers the challenge, or why it did not. Never throws. */
async function reportWhenReady(service, target, options) {
    const until = Date.now() + options.readyTimeoutMs;
    let wait = 50;
    while (Date.now() < until && service.running()) {
        const probe = await probeService(target, options.handshakeTimeoutMs);
        if (probe.state === 'ours') {
            console.log(`${LOG_PREFIX} the NanoGPT Companion service is up at ${target.url} (pid ${service.child.pid}, log ${service.logPath}).`);
            return;
        }
        await sleep(wait);
        wait = Math.min(wait * 2, 1000);
    }
    if (service.running()) {
        console.warn(`${LOG_PREFIX} the NanoGPT Companion service (pid ${service.child.pid}) does not answer at ${target.url} yet; see ${service.logPath}.`);
    }
}

/**
 * Starts the service unless one already answers. The port is the lock: a verified service there means no
 * second copy; something unverified there means we must not start one either (it could not bind anyway).
 */
async function autostartService(readLink, options) {
    let link;
    try {
        link = await readLink();
    } catch (err) {
        console.warn(`${LOG_PREFIX} not starting the NanoGPT Companion service: ${err.message}`);
        return null;
    }
    if (!link.autostart) return null;
    const probe = await probeService(link, options.handshakeTimeoutMs);
    if (probe.state === 'ours') {
        console.log(`${LOG_PREFIX} the NanoGPT Companion service already runs at ${link.url}; not starting another.`);
        return null;
    }
    if (probe.state === 'foreign') {
        console.warn(`${LOG_PREFIX} something else answers at ${link.url} (it ${probe.reason}); not starting the NanoGPT Companion service there.`);
        return null;
    }
    const service = startService(link.autostart, options);
    if (!service.child.pid) return null; // spawn failed; the 'error' handler said why
    console.log(`${LOG_PREFIX} started the NanoGPT Companion service (pid ${service.child.pid}); log: ${link.autostart.log}`);
    void reportWhenReady(service, link, options);
    return service;
}

// ------------------------------------------------------------------------------------------ ST contract

/**
 * ST calls init(router) once at start-up. The optional second argument exists for the test harness (short
 * limits, another ST folder); ST never passes it.
 * @param {import('express').Router} router
 * @param {Partial<typeof DEFAULTS>} [overrides]
 */
async function init(router, overrides = {}) {
    const options = { ...DEFAULTS, ...overrides };
    options.stDir = path.resolve(options.stDir || process.cwd());
    options.agent = new VerifiedAgent(options);
    live.agents.add(options.agent);
    const linkFile = path.join(options.stDir, 'plugins', LINK_FILE);
    const readLink = createLinkReader(linkFile, options);
    const hostAllowed = createHostCheck(readHostWhitelist(options.stDir));
    // A regular-expression route works on Express 4 and 5 alike and counts as a route for ST's mount check.
    router.all(/.*/, createHandler(options, readLink, hostAllowed, live.services));
    if (options.autostart) {
        const service = await autostartService(readLink, options);
        if (service) live.services.add(service);
    }
}

async function exit() {
    for (const agent of live.agents) agent.destroy();
    live.agents.clear();
    const services = [...live.services];
    live.services.clear();
    await Promise.all(services.map((service) => service.stop()));
}

module.exports = {
    info,
    init,
    exit,
    // Exposed for unit tests; not part of ST's plugin contract.
    _internals: { parseServiceUrl, loopbackAddress, checkForwardPath, checkToken, createHostCheck, expectedProof, DEFAULTS },
};
