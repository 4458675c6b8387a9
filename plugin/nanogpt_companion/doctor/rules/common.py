"""Shared reading of ST settings for the rules: which connection is NanoGPT, which model, which PPP.

settings.json is written by the browser and edited by hand, so every read here tolerates missing keys
and wrong types (a rule that crashes on a hand-edited file would hide every other finding).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.families import FamilyMatch
from nanogpt_companion.doctor.finding import KeyPath
from nanogpt_companion.domain import CatalogEntry
from nanogpt_companion.nanogpt.endpoints import EndpointId, ParsedNanoURL, parse_nanogpt_url
from nanogpt_companion.sillytavern.behaviour import ppp_applied, tool_calling
from nanogpt_companion.sillytavern.labels import ppp_label, ppp_labels
from nanogpt_companion.sillytavern.ppp import (
    TOOL_STRIPPING,
    TOOLS_SUFFIX,
    allowed_ppp_values,
    fit_to_version,
    with_tools,
)
from nanogpt_companion.sillytavern.ppp import normalise as normalise_ppp


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def oai_prefix(settings: Mapping[str, Any]) -> KeyPath:
    """Where Chat Completion settings live: ``oai_settings``, or top level in very old files."""
    return ("oai_settings",) if isinstance(settings.get("oai_settings"), Mapping) else ()


def oai(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_mapping(settings.get("oai_settings")) or settings


@dataclass(frozen=True)
class Connection:
    """A Chat Completion connection that talks to NanoGPT."""

    kind: Literal["nanogpt", "custom"]
    model: str  # "" when unset
    model_key: Literal["nanogpt_model", "custom_model"]
    url: ParsedNanoURL | None  # the Custom source's URL; None for the built-in source

    @property
    def endpoint_id(self) -> EndpointId | None:
        # The built-in source always uses API_NANOGPT = https://nano-gpt.com/api/v1.
        return "v1" if self.url is None else self.url.endpoint_id


def connection_of(view: Mapping[str, Any]) -> Connection | None:
    """The NanoGPT connection described by ``oai_settings``-like keys, or None."""
    source = as_str(view.get("chat_completion_source"))
    if source == "nanogpt":
        return Connection("nanogpt", (as_str(view.get("nanogpt_model")) or "").strip(), "nanogpt_model", None)
    if source == "custom":
        parsed = parse_nanogpt_url(view.get("custom_url"))
        if parsed is None:
            return None
        return Connection("custom", (as_str(view.get("custom_model")) or "").strip(), "custom_model", parsed)
    return None


def cc_connection(ctx: DoctorContext) -> Connection | None:
    """The active connection when ST is in Chat Completion mode and it goes to NanoGPT."""
    if ctx.settings.get("main_api") != "openai":
        return None
    return connection_of(oai(ctx.settings))


# Request-time suffixes NanoGPT strips before routing (nanogpt-api.md 3.8); they are never catalogue ids.
_REQUEST_SUFFIX_RE = re.compile(
    r"(?::(?:online(?:/[\w-]+)?|memory(?:-\d+)?|reasoning-exclude|redaction|fast|cheap|price|latency"
    r"|throughput|tools|caching))+$",
    re.IGNORECASE,
)


def strip_request_suffixes(model_id: str) -> str:
    return _REQUEST_SUFFIX_RE.sub("", model_id)


def lookup_model(catalogue: Mapping[str, CatalogEntry] | None, model_id: str) -> CatalogEntry | None:
    if catalogue is None or not model_id:
        return None
    entry = catalogue.get(model_id)
    if entry is None:
        entry = catalogue.get(strip_request_suffixes(model_id))
    return entry


def is_vision(entry: CatalogEntry | None) -> bool | None:
    """True/False only when NanoGPT said so; None = unknown (a missing flag is never "no")."""
    if entry is None:
        return None
    flag = entry.capabilities.get("vision")
    if flag is not None:
        return flag
    if entry.input_modalities is not None:
        return "image" in entry.input_modalities
    return None


def is_reasoning(entry: CatalogEntry | None) -> bool | None:
    if entry is None:
        return None
    flag = entry.capabilities.get("reasoning")
    if flag is not None:
        return flag
    return True if entry.thinking_base is not None else None


def inlining(view: Mapping[str, Any]) -> tuple[str | None, bool | None]:
    """The inline-media switch actually present in the file and its value.

    1.15 renamed ``image_inlining`` to ``media_inlining``; reading whichever key exists avoids guessing.
    """
    for key in ("media_inlining", "image_inlining"):
        if key in view:
            return key, as_bool(view.get(key))
    return None, None


PPPAdviceKind = Literal["unset", "strips_tools", "family"]


@dataclass(frozen=True)
class PPPAdvice:
    kind: PPPAdviceKind
    current: str
    value: str
    reasons: tuple[str, ...]
    family: FamilyMatch | None
    # Applying it turns tool calling off (function calling works here, but this ST has no *_tools values).
    loses_tools: bool


def tools_in_play(ctx: DoctorContext, view: Mapping[str, Any], conn: Connection) -> bool | None:
    """Would ST send tools on this connection: function calling is on and the source supports it in this
    version (the NanoGPT source only from 1.16.0). None when the version range does not say."""
    if as_bool(view.get("function_calling")) is not True:
        return False
    return tool_calling(ctx.st_version, conn.kind)


def prefer_tools(ctx: DoctorContext, view: Mapping[str, Any], conn: Connection) -> bool:
    """Pick the "with tools" twin: the version knows it and tools are (or may be) sent. When unsure, the
    twin is the harmless side: with no tools in the request it behaves exactly like its no-tools sibling."""
    return ctx.st_version.knows_tools_ppp and tools_in_play(ctx, view, conn) is not False


def plan_ppp(
    ctx: DoctorContext, view: Mapping[str, Any], conn: Connection, current: object
) -> PPPAdvice | None:
    """What PPP this NanoGPT connection should use, if its ``current`` value is a problem.

    Shared by the settings, preset and profile rules so all three agree on one answer. None when the value
    is fine, or when this ST ignores PPP for the source anyway (the NanoGPT source before 1.13.0). Inline
    images never matter: ST keeps image parts in every mode since 1.12.8 (sillytavern/ppp.py).
    """
    if ppp_applied(ctx.st_version, conn.kind) is False:
        return None
    allowed = allowed_ppp_values(ctx.st_version)
    tools = prefer_tools(ctx, view, conn)
    family = ctx.family_table.match(conn.model) if conn.model else None
    cur = normalise_ppp(current)

    reasons: list[str] = []
    kind: PPPAdviceKind
    if cur == "":
        kind = "unset"
        value: str = family.entry.ppp if family is not None else "merge"
        if family is not None:
            reasons.append(family.entry.reason)
        value = with_tools(value) if tools else value
    elif cur in TOOL_STRIPPING and tools and tools_in_play(ctx, view, conn) is True:
        kind = "strips_tools"
        value = with_tools(cur)
    elif family is not None and cur in ("merge", "merge_tools") and family.entry.ppp != "merge":
        kind = "family"
        value = with_tools(family.entry.ppp) if cur == "merge_tools" else family.entry.ppp
        reasons.append(family.entry.reason)
    else:
        return None

    fitted = fit_to_version(value, allowed)
    if fitted is None or fitted in (cur, ""):
        return None
    if fitted != value:
        reasons.append(
            f'Your SillyTavern version does not know "{ppp_label(value, ctx.st_version)}" yet, so '
            f'"{ppp_label(fitted, ctx.st_version)}" is used.'
        )
    loses_tools = tools_in_play(ctx, view, conn) is not False and not fitted.endswith(TOOLS_SUFFIX)
    loses_tools = loses_tools and as_bool(view.get("function_calling")) is True
    return PPPAdvice(kind, cur, fitted, tuple(reasons), family, loses_tools)


PPP_INTENTS: tuple[str, ...] = ("merge", "semi", "strict", "single")


def ppp_choices(ctx: DoctorContext) -> dict[str, Any]:
    """For the extension's error-signature path: which value the doctor would write for each intent
    ("merge", "semi", ...) on the active connection, through the same version gate as the rules.

    ``None`` for an intent this ST cannot express; every intent is None when ST ignores PPP here.
    """
    labels = ppp_labels(ctx.st_version)
    allowed = allowed_ppp_values(ctx.st_version)
    conn = cc_connection(ctx)
    applies = None if conn is None else ppp_applied(ctx.st_version, conn.kind)
    choices: dict[str, str | None] = dict.fromkeys(PPP_INTENTS)
    if conn is not None and applies is not False:
        tools = prefer_tools(ctx, oai(ctx.settings), conn)
        for intent in PPP_INTENTS:
            # Only the exact mode: a step down (semi -> merge) would not cure the error the user saw.
            wanted = with_tools(intent) if tools else intent
            choices[intent] = wanted if wanted in allowed else None
    return {
        "values": sorted(allowed),
        "labels": {value: labels.get(value, value) for value in sorted(allowed)},
        "choices": choices,
        "applies": applies,
    }
