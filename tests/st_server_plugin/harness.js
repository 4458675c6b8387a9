'use strict';

/*
 * A small stand-in for SillyTavern's server around a server plugin, for tests.
 *
 * It reproduces what ST does before a plugin's route runs (see reference/sillytavern.md section 6):
 * the plugin gets its own router mounted at /api/plugins/<id>/, `request.user` is set from the session
 * (here: the `X-Test-User` header stands in for the session cookie; no header = `default-user`, as with
 * accounts disabled), and JSON bodies are already parsed the way express.json() does it (`req.body`,
 * `req._body = true`). Only the express API surface the plugin uses is implemented.
 *
 * Usage: node harness.js --plugin <dir> --data-root <dir> --st-dir <dir> [--timeout-ms N] [--max-request-bytes N]
 *        [--max-response-bytes N] [--sse-idle-ms N] [--handshake-timeout-ms N] [--stop-timeout-ms N]
 *        [--autostart false]
 * Like ST's server.js, it chdir()s to the ST folder before loading the plugin (the plugin finds its link file
 * under `<ST>/plugins/` from there). Prints one JSON line {"port": N} on stdout when listening; exits on
 * SIGTERM or SIGINT after awaiting plugin.exit(), as ST does.
 */

const http = require('node:http');
const path = require('node:path');

function parseArgs(argv) {
    const args = {};
    for (let i = 0; i < argv.length; i += 2) {
        if (!argv[i].startsWith('--')) throw new Error(`unexpected argument ${argv[i]}`);
        args[argv[i].slice(2)] = argv[i + 1];
    }
    return args;
}

/** The bits of express's Router the plugin may call: all/get/post/put/delete/use with string or RegExp paths. */
class Router {
    constructor() {
        this.stack = [];
        for (const method of ['all', 'get', 'post', 'put', 'patch', 'delete']) {
            this[method] = (routePath, ...handlers) => {
                this.stack.push({ method: method === 'all' ? null : method.toUpperCase(), routePath, handlers, route: true });
                return this;
            };
        }
    }

    use(...args) {
        const routePath = typeof args[0] === 'function' ? '/' : args.shift();
        this.stack.push({ method: null, routePath, handlers: args, prefix: true });
        return this;
    }

    matches(layer, req) {
        if (layer.method && layer.method !== req.method && !(layer.method === 'GET' && req.method === 'HEAD')) return false;
        const p = req.path;
        if (layer.routePath instanceof RegExp) return layer.routePath.test(p);
        if (layer.routePath === '*') return true;
        if (layer.prefix) return p === layer.routePath || p.startsWith(layer.routePath.replace(/\/$/, '') + '/');
        return p === layer.routePath;
    }

    async handle(req, res) {
        for (const layer of this.stack) {
            if (!this.matches(layer, req)) continue;
            for (const handler of layer.handlers) {
                let nextCalled = false;
                await handler(req, res, (err) => {
                    if (err) throw err;
                    nextCalled = true;
                });
                if (!nextCalled) return true;
            }
        }
        return false;
    }
}

/** Adds express's response helpers that the plugin uses. */
function decorateResponse(res) {
    res.status = (code) => {
        res.statusCode = code;
        return res;
    };
    res.set = (name, value) => {
        if (typeof name === 'object') {
            for (const [k, v] of Object.entries(name)) res.setHeader(k, v);
        } else {
            res.setHeader(name, value);
        }
        return res;
    };
    res.json = (obj) => {
        const body = Buffer.from(JSON.stringify(obj), 'utf8');
        if (!res.getHeader('content-type')) res.setHeader('Content-Type', 'application/json; charset=utf-8');
        res.setHeader('Content-Length', String(body.length));
        res.end(body);
        return res;
    };
    res.send = (body) => {
        if (typeof body === 'object' && !Buffer.isBuffer(body)) return res.json(body);
        res.end(body);
        return res;
    };
    // What the `compression` middleware adds; a no-op here because nothing buffers in this harness.
    res.flush = () => {};
    return res;
}

/** express.json(): parse only JSON content types that carry a body, and mark the request as consumed. */
async function parseJsonBody(req, limit) {
    req.body = {};
    const type = String(req.headers['content-type'] || '').toLowerCase();
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length']) > 0;
    if (!type.startsWith('application/json') || !hasBody) return null;
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
        size += chunk.length;
        if (size > limit) return { status: 413 };
        chunks.push(chunk);
    }
    try {
        req.body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
        return { status: 400 };
    }
    req._body = true;
    return null;
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const plugin = require(path.resolve(args.plugin));
    const dataRoot = path.resolve(args['data-root']);
    process.chdir(path.resolve(args['st-dir']));
    const overrides = {};
    for (const [arg, key] of [['timeout-ms', 'timeoutMs'], ['max-request-bytes', 'maxRequestBytes'],
        ['max-response-bytes', 'maxResponseBytes'], ['sse-idle-ms', 'sseIdleMs'],
        ['handshake-timeout-ms', 'handshakeTimeoutMs'], ['stop-timeout-ms', 'stopTimeoutMs']]) {
        if (args[arg] !== undefined) overrides[key] = Number(args[arg]);
    }
    if (args.autostart !== undefined) overrides.autostart = args.autostart !== 'false';
    const router = new Router();
    await plugin.init(router, overrides);
    if (!router.stack.some((layer) => layer.route || layer.prefix)) throw new Error('plugin registered no routes');
    const mount = `/api/plugins/${plugin.info.id}`;

    const server = http.createServer(async (req, res) => {
        decorateResponse(res);
        try {
            const url = new URL(req.url, 'http://harness.invalid');
            if (url.pathname !== mount && !url.pathname.startsWith(mount + '/')) {
                res.status(404).json({ error: 'not mounted here' });
                return;
            }
            const handle = String(req.headers['x-test-user'] || 'default-user');
            if (!/^[a-z0-9-]+$/.test(handle)) {
                res.status(403).json({ error: 'bad test user' });
                return;
            }
            req.user = {
                profile: { handle, name: handle },
                directories: { root: path.join(dataRoot, handle), extensions: path.join(dataRoot, handle, 'extensions') },
            };
            req.originalUrl = req.url;
            req.url = req.url.slice(mount.length) || '/';
            req.path = url.pathname.slice(mount.length) || '/';
            req.query = Object.fromEntries(url.searchParams);
            req.params = {};
            const bodyError = await parseJsonBody(req, 100 * 1024 * 1024);
            if (bodyError) {
                res.status(bodyError.status).json({ error: 'body' });
                return;
            }
            const handled = await router.handle(req, res);
            if (!handled && !res.headersSent) res.status(404).json({ error: 'no route' });
        } catch (err) {
            console.error('harness: handler threw', err && err.stack);
            if (!res.headersSent) res.status(500).json({ error: 'handler threw' });
            else res.destroy();
        }
    });
    server.listen(0, '127.0.0.1', () => {
        process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
    });
    let exiting = false;
    const shutdown = async () => {
        if (exiting) return;
        exiting = true;
        await plugin.exit();
        server.closeAllConnections();
        server.close(() => process.exit(0));
    };
    process.on('SIGTERM', shutdown);
    process.on('SIGINT', shutdown);
}

main().catch((err) => {
    console.error('harness failed:', err && err.stack);
    process.exit(1);
});
