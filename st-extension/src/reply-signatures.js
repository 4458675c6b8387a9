// Formatting doctor, the part that reads a reply: recognises the "strange formatting" signatures of a
// NanoGPT reply (issue 16). Pure: no DOM, no ST, no network, so it runs in Node's test runner as well as
// in the page. It only says WHAT a reply shows; which setting causes it, for the user's ST version, is the
// service's doctor knowledge (POST /api/doctor/signature). Message text never leaves the browser: callers
// send on only a signature's name and its `evidence` (a fixed label, never reply text).
//
// False alarms cost more than misses (a notice on a good reply teaches users to ignore the doctor), so
// every check asks for an unambiguous shape: a tag at the very start, a label at the start of a line
// naming the user, an entirely empty reply. Prose that merely contains a colon or the word "thinking" is
// never enough.

export const SIGNATURES = Object.freeze({
    REASONING_AS_TEXT: 'reasoning_as_text',
    SPEAKS_FOR_USER: 'speaks_for_user',
    EMPTY_REPLY: 'empty_reply',
    CUT_OFF: 'cut_off',
    ROLE_ERROR: 'role_error',
    REASONING_MISSING: 'reasoning_missing',
});

// A reasoning block at the very start (what NanoGPT's v1thinking and many open models emit), closed or
// not (a reply cut off inside its thinking never closes it).
const LEADING_THINK_RE = /^\s*<(think|thinking|reasoning)>\s*\S/i;
// A closing tag without its opening one: models whose chat template adds `<think>` to the prompt emit only
// the end of the block. Only counted with real text before it.
const BARE_CLOSE_RE = /^(?![\s\S]*<(?:think|thinking|reasoning)>)([\s\S]*?\S[\s\S]*?)<\/(think|thinking|reasoning)>/i;
// A "Thinking:" / "**Reasoning**" heading alone on the first line, followed by more text.
const THINKING_HEADING_RE = /^\s*(?:#{1,4}\s*)?(?:\*\*|__)?(?:thinking|reasoning|thought process|internal reasoning|chain of thought)(?:\*\*|__)?\s*:?\s*(?:\*\*|__)?\s*\n+\s*\S/i;
// Transcript labels a chat model never uses in its own voice.
const GENERIC_ROLE_RE = /^[ \t]*(?:\*\*)?(?:user|human|### (?:instruction|input))(?:\*\*)?[ \t]*:/im;
const UNREPLACED_MACRO_RE = /\{\{\s*(?:user|char)\s*\}\}/i;
const FENCE_RE = /```[\s\S]*?(?:```|$)/g;
// How a finished sentence can end in role-play: punctuation, closing quotes and brackets, action
// asterisks, emphasis, emoji and other symbols.
const FINISHED_END_RE = /[.!?…"'”’»)\]*_~>`:;\-—–]$|\p{Extended_Pictographic}$|\p{So}$/u;
const REPEAT_MIN_CHARS = 80;
const CUT_OFF_SHARE = 0.95;

function escapeRegex(text) {
    return String(text).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function normaliseSpace(text) {
    return String(text ?? '').replace(/\s+/g, ' ').trim();
}

/** Text outside fenced code blocks: code may legitimately show transcripts and tags. */
export function proseOf(text) {
    return String(text ?? '').replace(FENCE_RE, '');
}

/** Reasoning shown as reply text: returns an evidence label or null. */
export function reasoningAsText(text) {
    const prose = proseOf(text);
    if (LEADING_THINK_RE.test(prose)) return 'think-tag';
    if (BARE_CLOSE_RE.test(prose)) return 'think-close-tag';
    if (THINKING_HEADING_RE.test(prose)) return 'thinking-heading';
    return null;
}

/**
 * The reply speaks for the user or carries role labels: the user's name (or "User:"/"Human:") at the
 * start of a line followed by a colon, a literal {{user}}/{{char}}, or the user's last message repeated
 * at the start of the reply. The character's own name is not a signature (ST strips or shows it by the
 * user's "names" setting), nor is any other name (role-play is full of "Guard: Halt!").
 */
export function speaksForUser(text, { userName = '', lastUserText = '' } = {}) {
    const prose = proseOf(text);
    if (UNREPLACED_MACRO_RE.test(prose)) return 'macro';
    const name = String(userName ?? '').trim();
    if (name.length >= 2) {
        const re = new RegExp(`^[ \\t]*(?:\\*\\*)?${escapeRegex(name)}(?:\\*\\*)?[ \\t]*:[ \\t]*\\S`, 'im');
        if (re.test(prose)) return 'user-name-label';
    }
    if (GENERIC_ROLE_RE.test(prose)) return 'role-label';
    const last = normaliseSpace(lastUserText);
    if (last.length >= REPEAT_MIN_CHARS && normaliseSpace(prose).startsWith(last)) return 'repeats-prompt';
    return null;
}

/**
 * Cut off at the max-tokens limit: the reply used (nearly) all of it and stops mid-sentence. Both
 * figures must be known; an estimate that merely looks long is not enough.
 */
export function cutOff(text, { tokenCount = null, maxTokens = null } = {}) {
    if (!Number.isFinite(tokenCount) || !Number.isFinite(maxTokens) || maxTokens <= 0) return null;
    if (tokenCount < maxTokens * CUT_OFF_SHARE) return null;
    const tail = String(text ?? '').trimEnd();
    if (!tail || FINISHED_END_RE.test(tail)) return null;
    return 'at-max-tokens';
}

/**
 * Every signature one assistant reply shows, strongest first. `message`: {text, reasoning}; `context`:
 * {userName, lastUserText, tokenCount, maxTokens, expectReasoning}. `expectReasoning` is true only when
 * the user asked for reasoning from a model the catalogue lists as a reasoning model.
 */
export function detectReplySignatures(message, context = {}) {
    const text = String(message?.text ?? '');
    const reasoning = String(message?.reasoning ?? '');
    const found = [];
    if (!text.trim()) {
        found.push({ name: SIGNATURES.EMPTY_REPLY, evidence: reasoning.trim() ? 'only-reasoning' : 'empty' });
        return found;
    }
    const asText = reasoningAsText(text);
    if (asText) found.push({ name: SIGNATURES.REASONING_AS_TEXT, evidence: asText });
    const speaks = speaksForUser(text, context);
    if (speaks) found.push({ name: SIGNATURES.SPEAKS_FOR_USER, evidence: speaks });
    const cut = cutOff(text, context);
    if (cut) found.push({ name: SIGNATURES.CUT_OFF, evidence: cut });
    if (context.expectReasoning === true && !reasoning.trim() && !asText) {
        found.push({ name: SIGNATURES.REASONING_MISSING, evidence: 'no-reasoning' });
    }
    return found;
}

/** A failed generation's error toast that says the roles were in an order the provider refuses. */
const ROLE_ERROR_RE = /roles? must alternate|alternat(?:e|ing) (?:between )?user(?:\/| and )assistant|first message must (?:use|be|have) (?:the )?user role|must start with (?:a )?user|system messages? (?:must|should|can only) (?:be )?(?:at the beginning|first)|consecutive (?:messages|roles) (?:with|of) the same role/i;

export function roleError(errorText) {
    return ROLE_ERROR_RE.test(String(errorText ?? '')) ? 'provider-role-order' : null;
}

/**
 * The key under which "Not this" is remembered: the chat, the signature and the settings that decide it.
 * A changed setting (another model, another PPP mode) is a new situation, so the notice may come back.
 */
export function dismissalKey(chatId, signature, involved) {
    const parts = Object.keys(involved ?? {}).sort().map((k) => `${k}=${JSON.stringify(involved[k] ?? null)}`);
    return `${chatId ?? ''}|${signature}|${parts.join(',')}`;
}
