"""Model-choice rules: a selected model that vanished, and Text Completion with an unsuited model."""

from __future__ import annotations

import re
from collections.abc import Mapping

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor.rules.common import (
    as_mapping,
    as_str,
    cc_connection,
    lookup_model,
    oai_prefix,
    strip_request_suffixes,
)
from nanogpt_companion.doctor.rules.meta import make_finding
from nanogpt_companion.domain import CatalogEntry
from nanogpt_companion.nanogpt.endpoints import parse_nanogpt_url

# Thinking variants are separate ids: `x:thinking`, `x:thinking:max`, `x:8192`, legacy `x-thinking`
# (nanogpt-api.md 3.8). Stripping them gives the base model the variants share.
_VARIANT_RE = re.compile(r"(?::thinking(?::[\w.-]+)?|-thinking|:\d+)$", re.IGNORECASE)
MAX_LISTED = 50


def base_id(model_id: str) -> str:
    return _VARIANT_RE.sub("", strip_request_suffixes(model_id))


def _tail(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1].lower()


def closest_models(catalogue: Mapping[str, CatalogEntry], model_id: str) -> tuple[list[str], list[str]]:
    """(clear matches, related models) for an id that is not in the catalogue, each sorted.

    Clear: the same id in other letter case or under another vendor prefix. Related: the same base model
    (a thinking variant of it, or its base), also across vendor prefixes.
    """
    wanted = strip_request_suffixes(model_id)
    wanted_base = base_id(wanted)
    clear: set[str] = set()
    related: set[str] = set()
    for cid, entry in catalogue.items():
        if entry.is_router:
            continue
        if cid.lower() == wanted.lower() or _tail(cid) == _tail(wanted):
            clear.add(cid)
        elif base_id(cid).lower() == wanted_base.lower() or _tail(base_id(cid)) == _tail(wanted_base):
            related.add(cid)
    return sorted(clear), sorted(related)


def check_model_gone(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None or ctx.catalogue is None or not conn.model:
        return []
    if lookup_model(ctx.catalogue, conn.model) is not None:
        return []
    clear, related = closest_models(ctx.catalogue, conn.model)
    if len(clear) == 1:
        pick: str | None = clear[0]
    elif not clear and len(related) == 1:
        pick = related[0]
    else:
        pick = None
    suggestions = clear + related
    if conn.kind == "nanogpt":
        effect = "When SillyTavern connects, it silently switches to the first model in the list instead."
    else:
        effect = "Requests with this id fail."
    if pick is not None:
        advice = f"The closest model is {pick}."
    elif suggestions:
        advice = "Similar models: " + ", ".join(suggestions[:5]) + "."
    else:
        advice = "Please pick a model from the list."
    patch: tuple[PatchOp, ...] = ()
    if pick is not None:
        patch = (PatchOp(path=(*oai_prefix(ctx.settings), conn.model_key), value=pick, old=conn.model),)
    return [
        make_finding(
            "model.gone",
            explanation=(
                f"The selected model {conn.model} is not in NanoGPT's model list any more (it was removed or "
                f"renamed). {effect} {advice}"
            ),
            severity="error" if conn.kind == "custom" else "warning",
            patch=patch,
            extra=conn.model,
            details={"model": conn.model, "suggestions": suggestions[:MAX_LISTED], "clear_match": pick},
        )
    ]


# NanoGPT's SillyTavern guide: for Text Completion, Arli AI-served finetunes work best. An explicit
# `text_completion` capability flag, if NanoGPT ever sends one, wins over this vendor heuristic.
TEXT_COMPLETION_VENDORS: frozenset[str] = frozenset({"arliai"})


def text_completion_capable(entry: CatalogEntry) -> bool | None:
    flag = entry.capabilities.get("text_completion")
    if flag is not None:
        return flag
    vendor = entry.vendor.lower().replace(" ", "")
    prefix = entry.id.split("/", 1)[0].lower() if "/" in entry.id else ""
    if vendor in TEXT_COMPLETION_VENDORS or prefix in TEXT_COMPLETION_VENDORS:
        return True
    return None


def check_textgen_nanogpt(ctx: DoctorContext) -> list[Finding]:
    if ctx.settings.get("main_api") != "textgenerationwebui" or ctx.catalogue is None:
        return []
    textgen = as_mapping(ctx.settings.get("textgenerationwebui_settings"))
    if textgen is None or textgen.get("type") != "generic":
        return []
    server_urls = as_mapping(textgen.get("server_urls"))
    if server_urls is None or parse_nanogpt_url(server_urls.get("generic"), for_text_completion=True) is None:
        return []
    model = (as_str(textgen.get("generic_model")) or "").strip()
    if not model:
        return []
    entry = lookup_model(ctx.catalogue, model)
    if entry is not None and text_completion_capable(entry) is True:
        return []
    capable = sorted(
        cid
        for cid, candidate in ctx.catalogue.items()
        if not candidate.is_router and text_completion_capable(candidate) is True
    )
    listed = ", ".join(capable[:5]) + (" and more" if len(capable) > 5 else "")
    if entry is None:
        problem = f"The Text Completion model {model} is not in NanoGPT's model list."
    else:
        problem = (
            f"Text Completion is pointed at NanoGPT with {model}, which is a chat "
            "model: NanoGPT serves plain "
            "text completion for it only on a best-effort basis, so replies may be cut, repeated or empty."
        )
    suggestion = (
        f" NanoGPT's guide recommends the Arli AI-served finetunes for Text Completion, for example {listed}."
        if capable
        else " Use Chat Completion with the NanoGPT source for chat models."
    )
    return [
        make_finding(
            "textgen.nanogpt",
            explanation=problem + suggestion,
            severity="warning",
            extra=model,
            details={
                "model": model,
                "known": entry is not None,
                "text_completion_models": capable[:MAX_LISTED],
            },
        )
    ]
