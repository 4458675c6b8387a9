'use strict';

// Unit checks of the plugin's input validation (run by test_node_unit.py through `node --test`).
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const plugin = require(path.resolve(__dirname, '../../plugin/st-server-plugin'));
const { parseServiceUrl, checkForwardPath, checkToken } = plugin._internals;

test('info matches ST plugin contract', () => {
    assert.equal(plugin.info.id, 'nanogpt-companion');
    assert.match(plugin.info.id, /^[a-z0-9_-]+$/);
    assert.equal(typeof plugin.info.name, 'string');
    assert.equal(typeof plugin.info.description, 'string');
});

test('loopback service URLs are accepted, with localhost pinned to IPv4', () => {
    assert.deepEqual(parseServiceUrl('http://127.0.0.1:8719'), { hostname: '127.0.0.1', port: 8719 });
    assert.deepEqual(parseServiceUrl('http://localhost:8719/'), { hostname: '127.0.0.1', port: 8719 });
    assert.deepEqual(parseServiceUrl('http://[::1]:9000'), { hostname: '::1', port: 9000 });
    assert.deepEqual(parseServiceUrl('http://127.5.6.7'), { hostname: '127.5.6.7', port: 80 });
    // WHATWG URL normalises numeric IPv4 forms; they are still loopback.
    assert.deepEqual(parseServiceUrl('http://2130706433:1'), { hostname: '127.0.0.1', port: 1 });
});

test('anything that is not plain-http loopback is refused', () => {
    for (const bad of ['http://10.0.0.1', 'http://127.0.0.1.evil.test', 'http://0.0.0.0:8719', 'http://[::ffff:7f00:1]',
        'https://127.0.0.1', 'http://a:b@127.0.0.1', 'ftp://127.0.0.1', '', 42, null, 'x'.repeat(300)]) {
        assert.throws(() => parseServiceUrl(bad), (err) => err.code === 'bad_service_url', String(bad));
    }
});

test('only the service API paths are forwarded', () => {
    assert.equal(checkForwardPath('/health'), '/health');
    assert.equal(checkForwardPath('/api/catalog?q=a%20b'), '/api/catalog?q=a%20b');
    for (const [bad, code] of [['/', 'not_found'], ['/admin', 'not_found'], ['//evil.test/api/x', 'bad_request'],
        ['/api/../x', 'bad_request'], ['/api/%2E%2E/x', 'bad_request'], ['/api/%zz', 'bad_request'], ['api/x', 'bad_request'],
        ['/api/a b', 'bad_request'], ['/api\\x', 'bad_request']]) {
        assert.throws(() => checkForwardPath(bad), (err) => err.code === code, bad);
    }
});

test('tokens that could inject header syntax are refused', () => {
    const good = 'A'.repeat(43);
    assert.equal(checkToken(good), good);
    for (const bad of [good + '\r\nX-Evil: 1', 'short', good + ' x', 123, undefined]) {
        assert.throws(() => checkToken(bad), (err) => err.status === 503);
    }
});

test('init registers a catch-all route and exit closes agents', async () => {
    const routes = [];
    await plugin.init({ all: (p, h) => routes.push([p, h]) });
    assert.equal(routes.length, 1);
    assert.ok(routes[0][0] instanceof RegExp && routes[0][0].test('/api/x'));
    await plugin.exit();
});
