"""The selected Chat Completion model is not in NanoGPT's list: removed, mistyped, or ST's placeholder."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Literal

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor.rules.common import (
    cc_connection,
    lookup_model,
    oai_prefix,
    strip_request_suffixes,
)
from nanogpt_companion.doctor.rules.meta import make_finding
from nanogpt_companion.domain import CatalogEntry

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


# ST's default `nanogpt_model` on a fresh install (openai.js default_settings, the same in 1.12.8 L330,
# 1.13.5 L386, 1.19.0 L455). ST replaces a model that is not in the list with the first one as soon as the
# list loads (1.13.5 L1879-1882, 1.19.0 L2197-2200), so finding it still there means ST never connected.
ST_PLACEHOLDER_MODEL = "gpt-4o-mini"
# How alike two ids must be (difflib ratio) to call one a misspelling of the other.
TYPO_SIMILARITY = 0.85

GoneKind = Literal["removed", "typo", "unknown"]


def _typo_candidates(catalogue: Mapping[str, CatalogEntry], model_id: str) -> list[str]:
    wanted = strip_request_suffixes(model_id).lower()
    ids = {cid.lower(): cid for cid, entry in catalogue.items() if not entry.is_router}
    import difflib  # noqa: PLC0415 - only for a model that is gone: not resident in every idle service

    close = difflib.get_close_matches(wanted, list(ids), n=3, cutoff=TYPO_SIMILARITY)
    return [ids[c] for c in close]


def check_model_gone(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None or ctx.catalogue is None or not conn.model:
        return []
    if lookup_model(ctx.catalogue, conn.model) is not None:
        return []
    if conn.kind == "nanogpt" and conn.model == ST_PLACEHOLDER_MODEL:
        return []  # ST's placeholder before the first Connect, not a choice the user made
    removed_at = ctx.removed_models.get(conn.model) or ctx.removed_models.get(
        strip_request_suffixes(conn.model)
    )
    clear, related = closest_models(ctx.catalogue, conn.model)
    close = [cid for cid in _typo_candidates(ctx.catalogue, conn.model) if cid not in clear]
    kind: GoneKind = "removed" if removed_at is not None else ("typo" if clear or close else "unknown")
    if len(clear) == 1:
        pick: str | None = clear[0]
    elif not clear and len(close) == 1 and kind == "typo":
        pick = close[0]
    elif not clear and not close and len(related) == 1:
        pick = related[0]
    else:
        pick = None
    suggestions = list(dict.fromkeys(clear + close + related))
    if conn.kind == "nanogpt":
        effect = "When SillyTavern connects, it silently switches to the first model in the list instead."
    else:
        effect = "Requests with this id fail."
    if pick is not None:
        advice = f"The closest model is {pick}." if kind != "typo" else f"Did you mean {pick}?"
    elif suggestions:
        advice = "Similar models: " + ", ".join(suggestions[:5]) + "."
    else:
        advice = "Please pick a model from the list."
    if kind == "removed":
        when = time.strftime("%Y-%m-%d", time.gmtime(removed_at)) if removed_at else "recently"
        title = "Selected model was removed by NanoGPT"
        lead = f"NanoGPT removed {conn.model} from its model list (noticed {when})."
    elif kind == "typo":
        title = "Selected model id looks mistyped"
        lead = f"{conn.model} is not a NanoGPT model id, but a very similar one exists."
    else:
        title = None
        lead = (
            f"The selected model {conn.model} is not in NanoGPT's model list: it may have been removed or "
            "renamed, or the id is mistyped."
        )
    patch: tuple[PatchOp, ...] = ()
    if pick is not None:
        patch = (PatchOp(path=(*oai_prefix(ctx.settings), conn.model_key), value=pick, old=conn.model),)
    return [
        make_finding(
            "model.gone",
            title=title,
            explanation=f"{lead} {effect} {advice}",
            severity="error" if conn.kind == "custom" else "warning",
            patch=patch,
            extra=conn.model,
            details={
                "model": conn.model,
                "kind": kind,
                "removed_at": removed_at,
                "suggestions": suggestions[:MAX_LISTED],
                "clear_match": pick,
            },
        )
    ]
