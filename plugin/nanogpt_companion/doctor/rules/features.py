"""Rules about features that silently do nothing or break with the selected NanoGPT model."""

from __future__ import annotations

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor.rules.common import (
    as_bool,
    as_int,
    cc_connection,
    inlining,
    is_reasoning,
    is_vision,
    lookup_model,
    oai,
    oai_prefix,
)
from nanogpt_companion.doctor.rules.meta import make_finding

# Below this share of the model's context the user is likely leaving memory on the table; any higher and
# a smaller budget is a normal cost choice not worth nagging about.
FAR_BELOW_FRACTION = 0.25


def check_reasoning(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None:
        return []
    view = oai(ctx.settings)
    show = as_bool(view.get("show_thoughts"))
    if conn.endpoint_id == "v1thinking":
        if show is not True:
            return []
        return [
            make_finding(
                "reasoning",
                title='"Request model reasoning" has no effect on this address',
                explanation=(
                    "Your Custom connection uses NanoGPT's v1thinking address, which mixes the model's "
                    'reasoning into the reply text itself. "Request model reasoning" cannot show or hide '
                    "it there. Use the standard address if you want thoughts in ST's separate reasoning box."
                ),
                severity="info",
                extra=f"v1thinking:{conn.model}",
                details={"endpoint": "v1thinking"},
            )
        ]
    entry = lookup_model(ctx.catalogue, conn.model)
    if show is not False or is_reasoning(entry) is not True:
        return []
    return [
        make_finding(
            "reasoning",
            explanation=(
                f'{conn.model} is a reasoning model, but "Request model reasoning" is off, so ST hides its '
                "thoughts. NanoGPT still does (and bills) the reasoning; turning this "
                "on only makes it visible."
            ),
            severity="info",
            patch=(PatchOp(path=(*oai_prefix(ctx.settings), "show_thoughts"), value=True, old=False),),
            details={"model": conn.model},
        )
    ]


def check_web_search(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None or conn.kind != "custom":
        return []
    view = oai(ctx.settings)
    if as_bool(view.get("enable_web_search")) is not True:
        return []
    builtin_ok = ctx.st_version.nanogpt_web_search
    alternative = (
        "Switch to the built-in NanoGPT source, which adds web search for you, "
        'or add ":online" to the model id.'
        if builtin_ok
        else 'Add ":online" to the model id to search the web through NanoGPT.'
    )
    return [
        make_finding(
            "web_search",
            explanation=(
                '"Enable web search" is on, but the Custom (OpenAI-compatible) source '
                "does not pass it on, so "
                f"no search happens. {alternative} Turning the switch off removes the false impression."
            ),
            severity="warning",
            patch=(PatchOp(path=(*oai_prefix(ctx.settings), "enable_web_search"), value=False, old=True),),
            details={
                "alternatives": ["nanogpt_source", "online_suffix"] if builtin_ok else ["online_suffix"]
            },
        )
    ]


def check_images(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None:
        return []
    view = oai(ctx.settings)
    key, on = inlining(view)
    entry = lookup_model(ctx.catalogue, conn.model)
    vision = is_vision(entry)
    if key is None or on is None or vision is None:
        return []
    path = (*oai_prefix(ctx.settings), key)
    if on and not vision:
        return [
            make_finding(
                "images",
                explanation=(
                    f'"Send inline media" is on, but {conn.model} cannot see images. Pictures in the chat '
                    "are sent anyway and the request may fail or the model may ignore them. Turn it off, or "
                    "pick a model with vision for chats with images."
                ),
                severity="warning",
                patch=(PatchOp(path=path, value=False, old=True),),
                details={"model": conn.model, "vision": False, "key": key},
            )
        ]
    if vision and not on:
        return [
            make_finding(
                "images",
                explanation=(
                    f'{conn.model} can see images, but "Send inline media" is off, so pictures in the chat '
                    "never reach it. Turn it on if you want the model to look at them."
                ),
                severity="info",
                patch=(PatchOp(path=path, value=True, old=False),),
                details={"model": conn.model, "vision": True, "key": key},
            )
        ]
    return []


def check_context(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    # The built-in source caps the context at the model's context_length itself (getNanoGptMaxContext).
    if conn is None or conn.kind != "custom":
        return []
    entry = lookup_model(ctx.catalogue, conn.model)
    limit = entry.context_length if entry is not None else None
    view = oai(ctx.settings)
    current = as_int(view.get("openai_max_context"))
    if limit is None or limit <= 0 or current is None or current <= 0:
        return []
    path = (*oai_prefix(ctx.settings), "openai_max_context")
    if current > limit:
        return [
            make_finding(
                "context",
                explanation=(
                    f"The context size is {current:,} tokens, but {conn.model} accepts at most {limit:,}. "
                    "Long chats would be rejected or cut off by NanoGPT instead of being trimmed by ST."
                ),
                severity="warning",
                patch=(PatchOp(path=path, value=limit, old=view.get("openai_max_context")),),
                details={"model": conn.model, "context_length": limit, "current": current},
            )
        ]
    if current < limit * FAR_BELOW_FRACTION:
        return [
            make_finding(
                "context",
                explanation=(
                    f"The context size is {current:,} tokens, while {conn.model} can use "
                    f"{limit:,}. ST forgets "
                    "older messages much earlier than it needs to. A bigger context costs "
                    "more per message, so "
                    "raise it only as far as you like."
                ),
                severity="info",
                patch=(PatchOp(path=path, value=limit, old=view.get("openai_max_context")),),
                details={"model": conn.model, "context_length": limit, "current": current},
            )
        ]
    return []
