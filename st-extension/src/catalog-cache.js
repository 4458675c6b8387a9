// Keeps the last catalogue between page loads, so ST's model select is enriched and the catalogue browser
// is ready as soon as ST is, and the service is only asked whether it changed (If-None-Match: a 304 of a
// few hundred bytes instead of the list).
//
// Storage, by feature detection: ST's localforage (SillyTavern.libs.localforage, also a page global in
// every supported ST version, public/lib.js), else IndexedDB directly, else nothing (the catalogue then
// simply loads from the service on every page load, as before). Records are per service URL + token, so
// two ST users sharing a browser never see each other's catalogue. Failures (quota, private mode, a
// blocked database) are never fatal: the cache is a shortcut, not a source of truth.

const DB_NAME = 'nanogpt-companion';
const STORE_NAME = 'catalog';
const RECORD_VERSION = 1;
const OWNERS_KEY = 'owners';
export const KEEP_OWNERS = 4;

/** A short, stable, non-reversible id for (service URL, token): never store the token itself. */
export function ownerKey(url, token) {
    // cyrb53 (public domain): 53 bits are plenty to tell a handful of users apart.
    const str = `${url}\n${token}`;
    let h1 = 0xdeadbeef;
    let h2 = 0x41c6ce57;
    for (let i = 0; i < str.length; i++) {
        const ch = str.charCodeAt(i);
        h1 = Math.imul(h1 ^ ch, 2654435761);
        h2 = Math.imul(h2 ^ ch, 1597334677);
    }
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
    return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

/**
 * Whether two ETags name the same content: the service's gzip representation of a list carries the tag
 * of its identity representation with `.gz` before the closing quote (docs/http-contract.md), and a weak
 * form of a tag compares equal to it. Not a tag (null, a number...) never matches.
 */
export function sameRepresentation(a, b) {
    const opaque = (tag) => (typeof tag === 'string' ? tag.trim().replace(/^W\//, '').replace(/^"|"$/g, '').replace(/\.gz$/, '') : '');
    const x = opaque(a);
    return x !== '' && x === opaque(b);
}

class LocalForageBackend {
    constructor(localforage) {
        this.kind = 'localforage';
        this.db = localforage.createInstance({ name: DB_NAME, storeName: STORE_NAME });
    }

    get(key) {
        return this.db.getItem(key);
    }

    set(key, value) {
        return this.db.setItem(key, value);
    }

    remove(key) {
        return this.db.removeItem(key);
    }
}

/** The same three calls on a bare IndexedDB object store (for a page without localforage). */
class IndexedDbBackend {
    constructor(indexedDB) {
        this.kind = 'indexeddb';
        // Whatever version the database has (localforage may have made it first, at its own version); the
        // store is added by an upgrade only when it is missing.
        const open = (version) => new Promise((resolve, reject) => {
            const req = version === undefined ? indexedDB.open(DB_NAME) : indexedDB.open(DB_NAME, version);
            req.onupgradeneeded = () => {
                if (!req.result.objectStoreNames.contains(STORE_NAME)) req.result.createObjectStore(STORE_NAME);
            };
            req.onsuccess = () => resolve(req.result);
            req.onerror = () => reject(req.error);
            req.onblocked = () => reject(new Error('database blocked'));
        });
        this.opening = open().then((db) => {
            if (db.objectStoreNames.contains(STORE_NAME)) return db;
            const next = db.version + 1;
            db.close();
            return open(next);
        });
    }

    async run(mode, fn) {
        const db = await this.opening;
        return new Promise((resolve, reject) => {
            const tx = db.transaction(STORE_NAME, mode);
            const req = fn(tx.objectStore(STORE_NAME));
            tx.oncomplete = () => resolve(req.result);
            tx.onerror = () => reject(tx.error);
            tx.onabort = () => reject(tx.error);
        });
    }

    get(key) {
        return this.run('readonly', (store) => store.get(key)).then((v) => v ?? null);
    }

    set(key, value) {
        return this.run('readwrite', (store) => store.put(value, key));
    }

    remove(key) {
        return this.run('readwrite', (store) => store.delete(key));
    }
}

export class CatalogCache {
    constructor(backend) {
        this.backend = backend;
    }

    /** The best storage the page offers. */
    static open(g = globalThis) {
        try {
            const lf = g.SillyTavern?.libs?.localforage ?? g.localforage;
            if (typeof lf?.createInstance === 'function') return new CatalogCache(new LocalForageBackend(lf));
            if (g.indexedDB) return new CatalogCache(new IndexedDbBackend(g.indexedDB));
        } catch (err) {
            console.debug('[NanoGPT Companion] no catalogue cache:', err?.message ?? err);
        }
        return new CatalogCache(null);
    }

    get kind() {
        return this.backend?.kind ?? 'none';
    }

    /** `{etag, payload, savedAt}` for this owner, or null. */
    async load(owner) {
        if (!this.backend || !owner) return null;
        try {
            const rec = await this.backend.get(`catalog:${owner}`);
            const usable = rec && rec.v === RECORD_VERSION && typeof rec.etag === 'string' && Array.isArray(rec.payload?.models);
            return usable ? rec : null;
        } catch (err) {
            console.debug('[NanoGPT Companion] catalogue cache unreadable:', err?.message ?? err);
            return null;
        }
    }

    async save(owner, etag, payload) {
        if (!this.backend || !owner || !etag) return false;
        try {
            await this.backend.set(`catalog:${owner}`, { v: RECORD_VERSION, etag, payload, savedAt: Date.now() });
            await this.remember(owner);
            return true;
        } catch (err) {
            // Quota or a private window: the next page load fetches the catalogue again, that is all.
            console.debug('[NanoGPT Companion] catalogue cache not saved:', err?.message ?? err);
            return false;
        }
    }

    /** Keep the records of the last few owners (ST users on this browser), drop older ones. */
    async remember(owner) {
        const owners = ((await this.backend.get(OWNERS_KEY)) ?? []).filter((o) => typeof o === 'string' && o !== owner);
        owners.unshift(owner);
        for (const old of owners.splice(KEEP_OWNERS)) await this.backend.remove(`catalog:${old}`);
        await this.backend.set(OWNERS_KEY, owners);
    }
}
