// Unit checks of the extension's reply-signature engine (run by test_engine.py through `node --test`).
// REPLIES_FILE (optional): a JSON list of clean replies captured from the fake NanoGPT; none may match.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
    detectReplySignatures, dismissalKey, roleError, SIGNATURES as S,
} from '../../st-extension/src/reply-signatures.js';

const names = (text, ctx = {}, reasoning = '') => detectReplySignatures({ text, reasoning }, { userName: 'Alex', ...ctx }).map((s) => s.name);
const evidence = (text, ctx = {}) => detectReplySignatures({ text }, { userName: 'Alex', ...ctx }).map((s) => s.evidence);

test('reasoning shown as text: a leading think block, an unclosed one, a bare closing tag, a heading', () => {
    assert.deepEqual(evidence('<think>\nThe user greets me.\n</think>\n\nHello there!'), ['think-tag']);
    assert.deepEqual(evidence('  <thinking>Plan: be kind.</thinking>Hi.'), ['think-tag']);
    assert.deepEqual(evidence('<think>\nStill thinking when the tokens ran out'), ['think-tag']);
    assert.deepEqual(evidence('I should greet them warmly.\n</think>\n\nHello!'), ['think-close-tag']);
    assert.deepEqual(evidence('**Thinking:**\nThe user wants a story.\n\nOnce upon a time...'), ['thinking-heading']);
    assert.deepEqual(evidence('Reasoning\n\nThey asked for tea.\n\n"Here you go."'), ['thinking-heading']);
});

test('speaks for the user: their name or a transcript label at a line start, macros, a repeated prompt', () => {
    assert.deepEqual(evidence('She smiles.\n\nAlex: Thanks, I guess.'), ['user-name-label']);
    assert.deepEqual(evidence('She smiles.\n\n**Alex:** Thanks.'), ['user-name-label']);
    assert.deepEqual(evidence('She smiles.\nHuman: and then?'), ['role-label']);
    assert.deepEqual(evidence('She smiles at {{user}}.'), ['macro']);
    const prompt = 'I walk into the tavern, shake the rain off my coat and ask the barkeep whether he has seen my brother lately.';
    assert.deepEqual(evidence(`${prompt}\n\nThe barkeep shakes his head.`, { lastUserText: prompt }), ['repeats-prompt']);
});

test('empty and cut-off replies; a cut-off needs both token figures and an unfinished end', () => {
    assert.deepEqual(names('   '), [S.EMPTY_REPLY]);
    assert.deepEqual(evidence('', {}), ['empty']);
    assert.deepEqual(detectReplySignatures({ text: '', reasoning: 'thought a lot' }).map((s) => s.evidence), ['only-reasoning']);
    assert.deepEqual(names('word1 word2 word3 and then she', { tokenCount: 300, maxTokens: 300 }), [S.CUT_OFF]);
    assert.deepEqual(names('word1 word2 word3 and then she left.', { tokenCount: 300, maxTokens: 300 }), []);
    assert.deepEqual(names('and then she', { tokenCount: 100, maxTokens: 300 }), []);
    assert.deepEqual(names('and then she', { maxTokens: 300 }), []);
});

test('reasoning missing only when the user asked a reasoning model for it', () => {
    assert.deepEqual(names('Hello!', { expectReasoning: true }), [S.REASONING_MISSING]);
    assert.deepEqual(names('Hello!', { expectReasoning: true }, 'I thought.'), []);
    assert.deepEqual(names('Hello!', { expectReasoning: false }), []);
    assert.deepEqual(names('<think>\nx\n</think>\nHello!', { expectReasoning: true }), [S.REASONING_AS_TEXT]);
});

test('clear shapes only: colons, other names, the word thinking and code blocks raise nothing', () => {
    const clean = [
        'Guard: Halt! Who goes there?\n\nMira: Just travellers.',
        'Seraphina: *She smiles.* Welcome back.',
        'Note: the bridge is out. Time: 3:45.',
        'I think we should go. Thinking about it, yes.',
        'Thinking back on it, she laughed.',
        '"Thinking:" she repeats, mocking him.',
        '```\nUser: ls\nHuman: what?\n<think>x</think>\n```\nThat is the log.',
        'Alexandra: I am not the user.',
        'She told Alex: come here.',
        'The user manual says: press the red button.',
        'Users: 5 online.',
    ];
    for (const text of clean) assert.deepEqual(names(text), [], text);
    // A one-letter persona name is too weak a witness to call a label.
    assert.deepEqual(names('A: first option', { userName: 'A' }), []);
    // A short quote of the user's line is normal role-play, not a repeated prompt.
    assert.deepEqual(names('"Hello?" you call. Nobody answers.', { lastUserText: 'Hello?' }), []);
});

test('provider errors about role order, and the dismissal key', () => {
    assert.equal(roleError('Conversation roles must alternate user/assistant/user/assistant/...'), 'provider-role-order');
    assert.equal(roleError('System message must be at the beginning.'), 'provider-role-order');
    assert.equal(roleError('Rate limit exceeded'), null);
    assert.equal(dismissalKey('chat1', S.SPEAKS_FOR_USER, { ppp: '', model: 'm' }), dismissalKey('chat1', S.SPEAKS_FOR_USER, { model: 'm', ppp: '' }));
    assert.notEqual(dismissalKey('chat1', S.SPEAKS_FOR_USER, { ppp: '' }), dismissalKey('chat1', S.SPEAKS_FOR_USER, { ppp: 'merge' }));
    assert.notEqual(dismissalKey('chat1', S.SPEAKS_FOR_USER, {}), dismissalKey('chat2', S.SPEAKS_FOR_USER, {}));
});

test('clean replies captured from the fake NanoGPT raise no notice', { skip: !process.env.REPLIES_FILE }, () => {
    const replies = JSON.parse(readFileSync(process.env.REPLIES_FILE, 'utf8'));
    assert.ok(replies.length >= 200, `only ${replies.length} replies`);
    const flagged = replies
        .map((text) => ({ text, found: detectReplySignatures({ text }, { userName: 'User', lastUserText: 'Hello there, how are you today?', tokenCount: 60, maxTokens: 300 }) }))
        .filter((r) => r.found.length);
    assert.deepEqual(flagged, []);
    console.log(`# clean replies checked: ${replies.length}`);
});
