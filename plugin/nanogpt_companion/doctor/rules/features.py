"""Rules about features that silently do nothing or break with the selected NanoGPT model.

Every rule asks ``sillytavern.behaviour`` what this ST version does for this source before it claims
anything: the built-in NanoGPT source and the Custom source differ (images, reasoning, context, web search),
and so do versions.
"""

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
from nanogpt_companion.sillytavern.behaviour import context_capped, images_sent, reasoning_shown
from nanogpt_companion.sillytavern.labels import SETTING_LABELS, setting_label

# Below this share of the model's context the user is likely leaving memory on the table; any higher and
# a smaller budget is a normal cost choice not worth nagging about.
FAR_BELOW_FRACTION = 0.25
# NanoGPT's price for one search with its default provider (Linkup, standard depth), per its chat-completion
# docs (shared/reference/nanogpt-api.md 5.4); the results also count as input tokens.
WEB_SEARCH_PRICE = "$0.006"
SHOW_THOUGHTS = SETTING_LABELS["show_thoughts"][1]
WEB_SEARCH = SETTING_LABELS["enable_web_search"][1]


def _version_text(ctx: DoctorContext) -> str:
    return f"SillyTavern {ctx.st_version.display}" if ctx.st_version.display else "Your SillyTavern"


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
                title=f'"{SHOW_THOUGHTS}" has no effect on this address',
                explanation=(
                    "Your Custom connection uses NanoGPT's v1thinking address, which mixes the model's "
                    f'reasoning into the reply text itself. "{SHOW_THOUGHTS}" cannot show or hide '
                    "it there. Use the standard address if you want thoughts in ST's separate reasoning box."
                ),
                severity="info",
                extra=f"v1thinking:{conn.model}",
                details={"endpoint": "v1thinking"},
            )
        ]
    entry = lookup_model(ctx.catalogue, conn.model)
    if is_reasoning(entry) is not True:
        return []
    shown = reasoning_shown(ctx.st_version, conn.kind)
    if shown is False:
        return [_reasoning_not_shown(ctx, conn.kind, conn.model)]
    if show is not False:
        return []
    return [
        make_finding(
            "reasoning",
            explanation=(
                f'{conn.model} is a reasoning model, but "{SHOW_THOUGHTS}" is off, so ST hides its '
                "thoughts. NanoGPT still does (and bills) the reasoning; turning this "
                "on only makes it visible (ST does not send the switch to NanoGPT)."
            ),
            severity="info",
            patch=(PatchOp(path=(*oai_prefix(ctx.settings), "show_thoughts"), value=True, old=False),),
            details={"model": conn.model},
        )
    ]


def _reasoning_not_shown(ctx: DoctorContext, source: str, model: str) -> Finding:
    """This ST cannot show reasoning from this source at all: say why and what would, per source."""
    version = _version_text(ctx)
    if source == "nanogpt":
        text = (
            f"{version} does not read the model's reasoning from the NanoGPT source (it does from 1.13.5 "
            f'on), so {model} never shows its thoughts, whatever "{SHOW_THOUGHTS}" says. NanoGPT still does '
            "(and bills) the reasoning. Update SillyTavern to see it"
        )
        if reasoning_shown(ctx.st_version, "custom") is not False:
            text += (
                ", or use the Custom (OpenAI-compatible) source with https://nano-gpt.com/api/v1, which "
                "your SillyTavern already reads reasoning from"
            )
        text += "."
    else:
        text = (
            f"{version} does not read the model's reasoning from the Custom source (it does from 1.12.13 on, "
            f"from NanoGPT's standard and legacy addresses alike), so {model} never shows its thoughts. "
            "NanoGPT still does (and bills) the reasoning. Update SillyTavern to see it."
        )
    return make_finding(
        "reasoning",
        title="This SillyTavern cannot show the model's reasoning here",
        explanation=text,
        severity="info",
        extra=f"not-shown:{source}:{model}",
        details={"model": model, "source": source, "shown": False},
    )


def check_web_search(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None or conn.kind != "custom":
        return []
    view = oai(ctx.settings)
    if as_bool(view.get("enable_web_search")) is not True or conn.model.lower().split(":")[-1] == "online":
        return []
    # The switch is shared by every source that supports it (one `enable_web_search` key; index.html shows
    # it for nanogpt, openrouter, claude, makersuite... but not custom). Turning it off here would silently
    # turn it off for the built-in source too, so the doctor offers the suffix instead and never the switch.
    patch: tuple[PatchOp, ...] = ()
    if conn.model:
        patch = (
            PatchOp(
                path=(*oai_prefix(ctx.settings), conn.model_key), value=f"{conn.model}:online", old=conn.model
            ),
        )
    how = (
        f'The fix below adds ":online" to the model id ({conn.model}:online).'
        if conn.model
        else 'Add ":online" to the model id.'
    )
    return [
        make_finding(
            "web_search",
            explanation=(
                f'"{WEB_SEARCH}" is on, but the Custom (OpenAI-compatible) source does not use it: '
                "SillyTavern hides the switch for that source and never passes it on, so no search happens. "
                'To search the web through NanoGPT on this connection, end the model id in ":online". '
                f"{how} "
                f"Each search costs extra: about {WEB_SEARCH_PRICE} per message with NanoGPT's default "
                "search provider, plus the search results as input tokens. The switch itself is shared with "
                "the built-in NanoGPT source (and other sources), so turning it off here would also turn web "
                "search off there; the doctor leaves it alone."
            ),
            severity="info",
            patch=patch,
            raises_cost=True,
            extra=f"web-search:{conn.model}",
            details={"model": conn.model, "suggested_model": f"{conn.model}:online" if conn.model else None},
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
    label = setting_label((key,))
    path = (*oai_prefix(ctx.settings), key)
    details = {"model": conn.model, "vision": vision, "key": key, "source": conn.kind}
    if on and not vision:
        # Only the Custom source sends pictures to any model; the NanoGPT source checks capabilities.vision.
        if images_sent(ctx.st_version, conn.kind, vision) is not True:
            return []
        return [
            make_finding(
                "images",
                explanation=(
                    f'"{label}" is on, but {conn.model} cannot see images. The Custom source sends the '
                    "chat's pictures with every request anyway, so the request may fail or the model may "
                    "ignore them. Turn it off, or pick a model with vision for chats with images."
                ),
                severity="warning",
                patch=(PatchOp(path=path, value=False, old=True),),
                details=details,
            )
        ]
    sent_if_on = images_sent(ctx.st_version, conn.kind, vision)
    if vision and sent_if_on is False:
        if not on:
            return []
        return [
            make_finding(
                "images",
                title="This SillyTavern does not send images to the NanoGPT source",
                explanation=(
                    f'{conn.model} can see images and "{label}" is on, but {_version_text(ctx)} sends '
                    "pictures to the NanoGPT source only from 1.13.4 on, so they never reach it. Update "
                    "SillyTavern, or use the Custom (OpenAI-compatible) source, which sends them."
                ),
                severity="info",
                extra=f"images-not-sent:{conn.model}",
                details=details,
            )
        ]
    if vision and not on:
        return [
            make_finding(
                "images",
                explanation=(
                    f'{conn.model} can see images, but "{label}" is off, so pictures in the chat never '
                    "reach it. Turn it on if you want the model to look at them (pictures count as input "
                    "tokens)."
                ),
                severity="info",
                patch=(PatchOp(path=path, value=True, old=False),),
                raises_cost=True,
                details=details,
            )
        ]
    return []


def check_context(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    # The NanoGPT source caps the context at the model's context_length itself from 1.13.4 on.
    if conn is None or context_capped(ctx.st_version, conn.kind) is not False:
        return []
    entry = lookup_model(ctx.catalogue, conn.model)
    limit = entry.context_length if entry is not None else None
    view = oai(ctx.settings)
    current = as_int(view.get("openai_max_context"))
    if limit is None or limit <= 0 or current is None or current <= 0:
        return []
    return context_findings(
        "context", (*oai_prefix(ctx.settings), "openai_max_context"), conn.model, current, limit
    )


def context_findings(
    rule: str,
    path: tuple[str | int, ...],
    model: str,
    current: int,
    limit: int,
    *,
    ceiling: int | None = None,
) -> list[Finding]:
    """Shared by Chat and Text Completion: over the model's limit is a problem, far below a cost choice.

    ``ceiling``: the most ST's control accepts; a suggestion never goes above it."""
    label = setting_label(path)
    details = {"model": model, "context_length": limit, "current": current}
    target = min(limit, ceiling) if ceiling is not None else limit
    if current > limit:
        return [
            make_finding(
                rule,
                explanation=(
                    f'"{label}" is {current:,} tokens, but {model} accepts at most {limit:,}. Long chats '
                    "would be rejected or cut off by NanoGPT instead of being trimmed by ST."
                    + (f" {target:,} is as far as SillyTavern's slider goes." if target < limit else "")
                ),
                severity="warning",
                patch=(PatchOp(path=path, value=target, old=current),),
                details=details,
            )
        ]
    if current < limit * FAR_BELOW_FRACTION and target > current:
        capped = (
            f' SillyTavern\'s slider goes up to {target:,} unless you tick its "Unlocked" box.'
            if target < limit
            else ""
        )
        return [
            make_finding(
                rule,
                explanation=(
                    f'"{label}" is {current:,} tokens, while {model} can use {limit:,}. ST forgets older '
                    "messages much earlier than it needs to. A bigger context costs more per message, so "
                    f"raise it only as far as you like.{capped}"
                ),
                severity="info",
                patch=(PatchOp(path=path, value=target, old=current),),
                raises_cost=True,
                details=details,
            )
        ]
    return []
