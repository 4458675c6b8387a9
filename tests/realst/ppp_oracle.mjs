// SillyTavern's own Prompt Post-Processing, run on fixed message lists: the oracle for the doctor's PPP table.
//
//   node tests/realst/ppp_oracle.mjs <SillyTavern folder> [cases.json]
//
// Imports `src/prompt-converters.js` from the given ST install (it needs that install's node_modules, nothing
// else) and runs its `postProcessPrompt` for every value of that version's `PROMPT_PROCESSING_TYPE`, plus one
// value ST does not know, over each message list. Prints one JSON document on stdout:
//   {st_version, types: {NAME: value}, ui: [{value, label}], placeholder, cases: {name: [...]},
//    results: {value: {case: [...messages after post-processing]}}}
// The converter mutates its input, so every run gets a fresh deep copy. The placeholder ST inserts for a
// user-first layout is set to a marker through ST's own environment override (SILLYTAVERN_PROMPTPLACEHOLDER),
// so an inserted message can be told from a real one. Used by tests/doctor/test_ppp_oracle.py.

import fs from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

const PLACEHOLDER = '__NGC_PLACEHOLDER__';
const UNKNOWN_VALUE = 'ngc_unknown_value';
const IMAGE = { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'auto' } };

// Each list isolates one behaviour the doctor's table claims something about.
const DEFAULT_CASES = {
    // consecutive same-role runs: are they merged?
    role_runs: [
        { role: 'system', content: 'S1' },
        { role: 'system', content: 'S2' },
        { role: 'user', content: 'U1' },
        { role: 'user', content: 'U2' },
        { role: 'assistant', content: 'A1' },
        { role: 'assistant', content: 'A2' },
        { role: 'user', content: 'U3' },
    ],
    // a greeting before any user turn: is a user-first placeholder inserted?
    assistant_first: [
        { role: 'system', content: 'S1' },
        { role: 'assistant', content: 'Greeting' },
        { role: 'user', content: 'U1' },
    ],
    // a system message in the middle (author's note, world info): does it become a user turn?
    mid_system: [
        { role: 'system', content: 'S1' },
        { role: 'user', content: 'U1' },
        { role: 'assistant', content: 'A1' },
        { role: 'system', content: 'Note' },
        { role: 'user', content: 'U2' },
    ],
    // names on turns and example dialogue: folded into the text?
    names: [
        { role: 'system', content: 'S1' },
        { role: 'system', name: 'example_user', content: 'Hi' },
        { role: 'system', name: 'example_assistant', content: 'Hello' },
        { role: 'user', name: 'Alice', content: 'U1' },
        { role: 'assistant', name: 'Bob', content: 'A1' },
    ],
    // a tool call and its result: do they survive?
    tools: [
        { role: 'system', content: 'S1' },
        { role: 'user', content: 'What is the weather?' },
        { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Oslo"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temp":3}' },
        { role: 'assistant', content: 'It is 3 degrees.' },
        { role: 'user', content: 'Thanks' },
    ],
    // inline images, in two user turns that get merged: are the image parts kept as parts?
    images: [
        { role: 'system', content: 'S1' },
        { role: 'user', content: [{ type: 'text', text: 'Look at this' }, IMAGE] },
        { role: 'user', content: 'and tell me' },
        { role: 'assistant', content: 'A cat.' },
        { role: 'user', content: [{ type: 'text', text: 'And this?' }, IMAGE] },
    ],
    // nothing at all: what does ST send?
    empty: [],
};

function fail(message) {
    process.stderr.write(`ppp_oracle: ${message}\n`);
    process.exit(2);
}

function uiOptions(stDir) {
    // The values and labels the version offers in its Prompt Post-Processing select, as the page renders them.
    const html = fs.readFileSync(path.join(stDir, 'public', 'index.html'), 'utf8');
    const start = html.indexOf('id="custom_prompt_post_processing"');
    if (start < 0) return null;
    const end = html.indexOf('</select>', start);
    const block = html.slice(start, end);
    return [...block.matchAll(/<option[^>]*value="([^"]*)"[^>]*>([^<]*)<\/option>/g)].map((m) => ({ value: m[1], label: m[2].trim() }));
}

async function main() {
    const [stArg, casesArg] = process.argv.slice(2);
    if (!stArg) fail('usage: node ppp_oracle.mjs <SillyTavern folder> [cases.json]');
    const stDir = path.resolve(stArg);
    const converters = path.join(stDir, 'src', 'prompt-converters.js');
    if (!fs.existsSync(converters)) fail(`${converters} not found`);
    if (!fs.existsSync(path.join(stDir, 'node_modules'))) fail(`${stDir} has no node_modules (install its dependencies first)`);
    const cases = casesArg ? JSON.parse(fs.readFileSync(casesArg, 'utf8')) : DEFAULT_CASES;

    // ST reads config values lazily through util.js; point it at the version's own default config so module-
    // level lookups work, and override only the placeholder text (ST's documented env override).
    process.env.SILLYTAVERN_PROMPTPLACEHOLDER = PLACEHOLDER;
    const util = await import(pathToFileURL(path.join(stDir, 'src', 'util.js')).href);
    if (typeof util.setConfigFilePath === 'function') {
        util.setConfigFilePath(path.join(stDir, 'default', 'config.yaml'));
    } else {
        process.chdir(path.join(stDir, 'default')); // older ST reads ./config.yaml
    }
    const pc = await import(pathToFileURL(converters).href);
    if (typeof pc.postProcessPrompt !== 'function') fail(`${converters} does not export postProcessPrompt (ST older than 1.13.0?)`);

    const body = { char_name: 'Bob', user_name: 'Alice', group_names: [] };
    const names = typeof pc.getPromptNames === 'function'
        ? pc.getPromptNames({ body })
        : { charName: 'Bob', userName: 'Alice', groupNames: [], startsWithGroupName: () => false };
    const types = pc.PROMPT_PROCESSING_TYPE ? { ...pc.PROMPT_PROCESSING_TYPE } : null;
    const values = [...new Set([...(types ? Object.values(types) : []), UNKNOWN_VALUE])];

    const results = {};
    for (const value of values) {
        results[value] = {};
        for (const [name, messages] of Object.entries(cases)) {
            results[value][name] = pc.postProcessPrompt(structuredClone(messages), value, names);
        }
    }
    const pkg = JSON.parse(fs.readFileSync(path.join(stDir, 'package.json'), 'utf8'));
    process.stdout.write(JSON.stringify({
        st_version: pkg.version,
        types,
        ui: uiOptions(stDir),
        placeholder: PLACEHOLDER,
        unknown_value: UNKNOWN_VALUE,
        cases,
        results,
    }));
}

main().catch((err) => fail(err?.stack ?? String(err)));
