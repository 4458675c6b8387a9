"""From a symptom the user saw in a reply to the settings that cause it (issue 16, the formatting doctor).

The extension recognises a reply's signature in the browser (``st-extension/src/reply-signatures.js``)
and sends only its name; this module says which setting of this user's connection, in this ST version,
produces that signature, and what to change. Each cause is a ``Finding`` (rule ``reply.<signature>``), so
its fix goes down the doctor's one live-fix path (sent to the tab, applied through ST's controls,
journalled, undoable). Pure: the service builds the context.

A signature with no cause that fits this connection yields nothing, and the extension then shows no
notice: a reply can look odd for reasons no setting explains, and a notice with nothing true to say is a
false alarm.
"""

from __future__ import annotations

from typing import Any, Literal

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp, Severity, finding_id
from nanogpt_companion.doctor.rules.common import (
    Connection,
    as_bool,
    as_int,
    as_mapping,
    as_str,
    cc_connection,
    lookup_model,
    oai,
    oai_prefix,
    ppp_choices,
)
from nanogpt_companion.doctor.rules.features import check_reasoning
from nanogpt_companion.doctor.rules.textgen import text_connection
from nanogpt_companion.nanogpt.endpoints import get_endpoint
from nanogpt_companion.sillytavern.behaviour import ppp_applied
from nanogpt_companion.sillytavern.labels import ppp_label
from nanogpt_companion.sillytavern.ppp import PPP_KEY

Signature = Literal[
    "reasoning_as_text", "speaks_for_user", "empty_reply", "cut_off", "role_error", "reasoning_missing"
]
SIGNATURES: tuple[str, ...] = (
    "reasoning_as_text",
    "speaks_for_user",
    "empty_reply",
    "cut_off",
    "role_error",
    "reasoning_missing",
)
SIGNATURE_TITLES: dict[str, str] = {
    "reasoning_as_text": "This looks like the model's reasoning shown as reply text",
    "speaks_for_user": "This reply speaks for you or carries chat-role labels",
    "empty_reply": "NanoGPT sent an empty reply",
    "cut_off": "This reply was cut off at the response length",
    "role_error": "The provider refused the order of the messages",
    "reasoning_missing": "You asked for the model's reasoning, but this reply has none",
}
AUTO_PARSE_PATH = ("power_user", "reasoning", "auto_parse")
# One step stricter than the current mode: what the next Prompt Post-Processing intent is when a reply
# still shows a role problem (None -> merge -> semi-strict -> strict).
NEXT_PPP_INTENT: dict[str, str] = {"": "merge", "merge": "semi", "semi": "strict"}
# The role-order errors the extension recognises, each with the mode that cures it (its `evidence`).
ERROR_INTENTS = frozenset({"merge", "semi", "strict"})
CUT_OFF_GROWTH = 2  # a cut-off reply gets twice the room, never more than the model can write


def _finding(
    signature: str,
    cause: str,
    *,
    title: str,
    explanation: str,
    patch: tuple[PatchOp, ...] = (),
    severity: Severity = "warning",
    raises_cost: bool = False,
    details: dict[str, Any] | None = None,
) -> Finding:
    rule = f"reply.{signature}"
    return Finding(
        id=finding_id(rule, "settings", patch, cause),
        rule=rule,
        title=title,
        explanation=explanation,
        severity=severity,
        patch=patch,
        raises_cost=raises_cost,
        details={"signature": signature, "cause": cause, **(details or {})},
    )


def causes(signature: str, ctx: DoctorContext, evidence: str = "") -> list[Finding]:
    """The causes of ``signature`` on this connection, most likely first (empty: none applies)."""
    if cc_connection(ctx) is None and text_connection(ctx) is None:
        return []  # not a NanoGPT connection: nothing the doctor knows is true here
    check = _CHECKS.get(signature)
    return check(ctx, evidence) if check is not None else []


# ---- reasoning shown as text ---------------------------------------------------------------------------


def _auto_parse(ctx: DoctorContext) -> tuple[bool | None, bool]:
    """(ST's reasoning Auto-Parse, whether the setting exists in this file)."""
    power = as_mapping(ctx.settings.get("power_user"))
    reasoning = as_mapping(power.get("reasoning")) if power else None
    if reasoning is None:
        return None, False
    return as_bool(reasoning.get("auto_parse")), "auto_parse" in reasoning


def _auto_parse_cause(ctx: DoctorContext, signature: str, why: str) -> Finding | None:
    on, exists = _auto_parse(ctx)
    if on is True:
        return None
    if not exists and on is None and as_mapping(ctx.settings.get("power_user")) is None:
        return None
    return _finding(
        signature,
        "auto-parse",
        title="Let SillyTavern take the reasoning out of the reply",
        explanation=(
            f"{why} SillyTavern's reasoning Auto-Parse (Advanced Formatting → Reasoning) moves a "
            "<think>…</think> block at the start of a reply into the reasoning box, where it belongs."
        ),
        patch=(PatchOp(path=AUTO_PARSE_PATH, value=True, old=on, existed=exists),),
    )


def _reasoning_as_text(ctx: DoctorContext, evidence: str) -> list[Finding]:
    signature = "reasoning_as_text"
    found: list[Finding] = []
    conn = cc_connection(ctx)
    if evidence == "thinking-heading":
        # A plain "Thinking:" heading is no tag any setting parses; only the model or the prompt can stop it.
        return [
            _finding(
                signature,
                "heading",
                title="The model writes its thinking as a heading",
                explanation=(
                    'The reply opens with a "Thinking" heading rather than a reasoning block, so no '
                    "SillyTavern setting can separate it. Pick the model's thinking variant on the standard "
                    "address (NanoGPT then returns the reasoning separately), or ask for no preamble in the "
                    "system prompt."
                ),
                severity="info",
            )
        ]
    if conn is not None and conn.endpoint_id == "v1thinking" and conn.url is not None:
        standard = get_endpoint("v1").url_on(conn.url.host)
        view = oai(ctx.settings)
        found.append(
            _finding(
                signature,
                "v1thinking",
                title="Use NanoGPT's standard address",
                explanation=(
                    "Your Custom connection uses NanoGPT's v1thinking address, which puts the model's "
                    f"reasoning into the reply text as <think>…</think>. On {standard} NanoGPT sends the "
                    "reasoning separately and SillyTavern shows it in its reasoning box."
                ),
                patch=(
                    PatchOp(
                        path=(*oai_prefix(ctx.settings), "custom_url"),
                        value=standard,
                        old=as_str(view.get("custom_url")),
                    ),
                ),
            )
        )
    why = "The model writes its reasoning into the reply text."
    if text_connection(ctx) is not None:
        why = (
            "Text Completion has no separate reasoning channel, so a thinking model's reasoning arrives as "
            "reply text."
        )
    auto = _auto_parse_cause(ctx, signature, why)
    if auto is not None:
        found.append(auto)
    return found


# ---- speaks for the user / role order ------------------------------------------------------------------


def _ppp_step(ctx: DoctorContext, conn: Connection, signature: str, intent: str, why: str) -> Finding | None:
    table = ppp_choices(ctx)
    view = oai(ctx.settings)
    current = as_str(view.get(PPP_KEY)) or ""
    if ppp_applied(ctx.st_version, conn.kind) is False:
        return _finding(
            signature,
            "ppp-ignored",
            title="Prompt Post-Processing is ignored for this source here",
            explanation=(
                f"{why} This SillyTavern version does not apply Prompt Post-Processing to the NanoGPT "
                "source. Update SillyTavern, or use the Custom (OpenAI-compatible) source with "
                "https://nano-gpt.com/api/v1, where it works."
            ),
            severity="info",
        )
    value = table["choices"].get(intent)
    if not value or value == current:
        return None
    return _finding(
        signature,
        f"ppp-{intent}",
        title=f'Set Prompt Post-Processing to "{ppp_label(value, ctx.st_version)}"',
        explanation=(
            f'{why} With "{ppp_label(current, ctx.st_version)}", SillyTavern sends this chat as a '
            "transcript the model can continue in your voice or refuse; "
            f'"{ppp_label(value, ctx.st_version)}" reshapes it into the turns the model expects.'
        ),
        patch=(
            PatchOp(
                path=(*oai_prefix(ctx.settings), PPP_KEY),
                value=value,
                old=view.get(PPP_KEY),
                existed=PPP_KEY in view,
            ),
        ),
        details={"ppp": value},
    )


def _base_intent(current: str) -> str:
    return current.removesuffix("_tools")


def _speaks_for_user(ctx: DoctorContext, evidence: str) -> list[Finding]:
    signature = "speaks_for_user"
    if text_connection(ctx) is not None:
        return [
            _finding(
                signature,
                "text-completion",
                title="Use Chat Completion for NanoGPT's chat models",
                explanation=(
                    "Text Completion sends the chat as one block of text, and a chat model continues it "
                    "line by line, your lines included. Connect with Chat Completion (the NanoGPT source) "
                    "instead; Text Completion suits the few models trained for it."
                ),
                severity="info",
            )
        ]
    conn = cc_connection(ctx)
    if conn is None:
        return []
    current = _base_intent(as_str(oai(ctx.settings).get(PPP_KEY)) or "")
    intent = NEXT_PPP_INTENT.get(current)
    if intent is None:
        return []
    step = _ppp_step(
        ctx,
        conn,
        signature,
        intent,
        "Models behind NanoGPT read several messages in a row from one side as a script.",
    )
    return [step] if step is not None else []


def _role_error(ctx: DoctorContext, evidence: str) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None or evidence not in ERROR_INTENTS:
        return []
    step = _ppp_step(
        ctx,
        conn,
        "role_error",
        evidence,
        "The provider behind this model accepts only certain message orders.",
    )
    return [step] if step is not None else []


# ---- empty and cut-off replies -------------------------------------------------------------------------


def _output_limit(ctx: DoctorContext, conn: Connection) -> int | None:
    entry = lookup_model(ctx.catalogue, conn.model)
    limit = entry.max_output_tokens if entry is not None else None
    return limit if limit is not None and limit > 0 else None


def _max_tokens_path(ctx: DoctorContext) -> tuple[str | int, ...]:
    return (*oai_prefix(ctx.settings), "openai_max_tokens")


def _empty_reply(ctx: DoctorContext, evidence: str) -> list[Finding]:
    signature = "empty_reply"
    conn = cc_connection(ctx)
    if conn is None:
        return []
    found: list[Finding] = []
    current = as_int(oai(ctx.settings).get("openai_max_tokens"))
    limit = _output_limit(ctx, conn)
    if current is not None and limit is not None and current > limit:
        found.append(
            _finding(
                signature,
                "over-output-limit",
                title="Lower the response length to what the model can write",
                explanation=(
                    f'"Max Response Length" is {current:,} tokens, but {conn.model} writes at most '
                    f"{limit:,}. Some providers answer such a request with nothing at all."
                ),
                patch=(PatchOp(path=_max_tokens_path(ctx), value=limit, old=current),),
                details={"model": conn.model, "max_output_tokens": limit},
            )
        )
    if evidence == "only-reasoning" and current is not None:
        found.append(
            _finding(
                signature,
                "reasoning-used-it-all",
                title="The reasoning used up the whole response length",
                explanation=(
                    f"The model thought, but its {current:,}-token response length ran out before the "
                    'answer. Raise "Max Response Length" or lower the reasoning effort.'
                ),
                severity="info",
            )
        )
    current_ppp = as_str(oai(ctx.settings).get(PPP_KEY)) or ""
    if not found and current_ppp == "":
        step = _ppp_step(
            ctx,
            conn,
            signature,
            "merge",
            "Some providers return nothing for a prompt with several messages in a row from one side.",
        )
        if step is not None:
            found.append(step)
    return found


def _cut_off(ctx: DoctorContext, evidence: str) -> list[Finding]:
    signature = "cut_off"
    conn = cc_connection(ctx)
    if conn is None:
        return []
    current = as_int(oai(ctx.settings).get("openai_max_tokens"))
    if current is None or current <= 0:
        return []
    limit = _output_limit(ctx, conn)
    target = current * CUT_OFF_GROWTH if limit is None else min(limit, current * CUT_OFF_GROWTH)
    if target <= current:
        return [
            _finding(
                signature,
                "at-output-limit",
                title="The model cannot write longer replies",
                explanation=(
                    f"{conn.model} writes at most {limit:,} tokens per reply and this one reached that. "
                    "Ask for shorter replies, or use Continue to let it go on."
                ),
                severity="info",
            )
        ]
    return [
        _finding(
            signature,
            "max-tokens",
            title="Give replies more room",
            explanation=(
                f'"Max Response Length" is {current:,} tokens and this reply used all of it. {target:,} lets '
                "the model finish; you pay only for the tokens it writes."
            ),
            patch=(PatchOp(path=_max_tokens_path(ctx), value=target, old=current),),
            details={"model": conn.model, "max_output_tokens": limit},
        )
    ]


# ---- reasoning missing ---------------------------------------------------------------------------------


def _reasoning_missing(ctx: DoctorContext, evidence: str) -> list[Finding]:
    """The settings doctor's reasoning rule already knows each source / address / version combination."""
    return [
        _finding(
            "reasoning_missing",
            f"reasoning:{finding.id}",
            title=finding.title,
            explanation=finding.explanation,
            patch=finding.patch,
            severity=finding.severity,
            details=finding.details,
        )
        for finding in check_reasoning(ctx)
    ]


_CHECKS = {
    "reasoning_as_text": _reasoning_as_text,
    "speaks_for_user": _speaks_for_user,
    "empty_reply": _empty_reply,
    "cut_off": _cut_off,
    "role_error": _role_error,
    "reasoning_missing": _reasoning_missing,
}


# ---- the settings the tab reports ----------------------------------------------------------------------

# What the extension may send as "the settings involved" (flat names) and where each lives in
# settings.json. The tab's values are newer than the file (ST saves a second after a change), so they
# win; nothing else of the tab's state, and never message text, reaches the service.
INVOLVED_PATHS: dict[str, tuple[str, ...]] = {
    "main_api": ("main_api",),
    "chat_completion_source": ("oai_settings", "chat_completion_source"),
    "custom_url": ("oai_settings", "custom_url"),
    "custom_model": ("oai_settings", "custom_model"),
    "nanogpt_model": ("oai_settings", "nanogpt_model"),
    "custom_prompt_post_processing": ("oai_settings", PPP_KEY),
    "show_thoughts": ("oai_settings", "show_thoughts"),
    "function_calling": ("oai_settings", "function_calling"),
    "openai_max_tokens": ("oai_settings", "openai_max_tokens"),
    "auto_parse": AUTO_PARSE_PATH,
}


def with_tab_settings(settings: dict[str, Any], involved: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (a fresh copy is returned) with the tab's current values of the involved settings."""
    out: dict[str, Any] = dict(settings)
    has_oai = isinstance(settings.get("oai_settings"), dict)
    for name, value in involved.items():
        path = INVOLVED_PATHS.get(name)
        if path is None:
            continue
        if path[0] == "oai_settings" and not has_oai:
            path = path[1:]  # very old files keep Chat Completion settings at the top level
        node = out
        for key in path[:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, dict) else {}
            node = node[key]
        node[path[-1]] = value
    return out
