// Reads {texts: {key: text}, maxTokens} on stdin, prints {key: [signature names]}: the engine as a filter
// for Python tests. Token count: words, as the fake NanoGPT counts them.
import { detectReplySignatures } from '../../st-extension/src/reply-signatures.js';

let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
    const { texts, maxTokens } = JSON.parse(input);
    const out = {};
    for (const [key, text] of Object.entries(texts)) {
        const tokenCount = text.trim() ? text.trim().split(/\s+/).length : 0;
        out[key] = detectReplySignatures({ text }, { userName: 'User', tokenCount, maxTokens }).map((s) => s.name);
    }
    process.stdout.write(JSON.stringify(out));
});
