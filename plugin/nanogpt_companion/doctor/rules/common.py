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
from nanogpt_companion.sillytavern.version import allowed_ppp_values

PPP_KEY = "custom_prompt_post_processing"
TOOLS_SUFFIX = "_tools"
# PPP values that drop tools from the request (tool-calling.js: tools only survive "" and *_tools).
TOOL_STRIPPING: frozenset[str] = frozenset({"merge", "semi", "strict", "single", "claude"})
# Values that force a user-first layout; with inline images these hit ST issue #3057 ("[Object]").
IMAGE_UNSAFE: frozenset[str] = frozenset({"strict", "strict_tools", "single"})


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


PPPAdviceKind = Literal["unset", "strips_tools", "images", "family"]


@dataclass(frozen=True)
class PPPAdvice:
    kind: PPPAdviceKind
    current: str
    value: str
    reasons: tuple[str, ...]
    family: FamilyMatch | None
    # Applying it turns tool calling off (function calling is on, but this ST has no *_tools values).
    loses_tools: bool


def _fit_to_version(value: str, allowed: frozenset[str]) -> str | None:
    """Step down to the nearest value this ST knows; None if nothing sensible is left."""
    chain = {
        "single_tools": "strict_tools",
        "strict_tools": "strict",
        "semi_tools": "semi",
        "merge_tools": "merge",
        "single": "semi",
        "semi": "merge",
        "strict": "merge",
    }
    current: str | None = value
    while current is not None and current not in allowed:
        current = chain.get(current)
    return current


def _with_tools(base: str) -> str:
    # `single` has no tools variant; strict_tools keeps its "user first, alternating" promise.
    return "strict_tools" if base == "single" else base + TOOLS_SUFFIX


def _image_safe(value: str) -> str:
    return {"strict": "semi", "single": "semi", "strict_tools": "semi_tools"}.get(value, value)


def plan_ppp(
    ctx: DoctorContext, view: Mapping[str, Any], conn: Connection, current: object
) -> PPPAdvice | None:
    """What PPP this NanoGPT connection should use, if its ``current`` value is a problem.

    Shared by the settings, preset and profile rules so all three agree on one answer.
    """
    allowed = allowed_ppp_values(ctx.st_version)
    knows_tools = ctx.st_version.knows_tools_ppp
    tools_on = as_bool(view.get("function_calling")) is True
    entry = lookup_model(ctx.catalogue, conn.model)
    vision = is_vision(entry)
    inline_on = inlining(view)[1] is True
    # Unknown vision counts as vision: a wrong "strict" breaks images, a wrong "semi" costs nothing.
    guard_images = inline_on and vision is not False
    family = ctx.family_table.match(conn.model) if conn.model else None
    cur = as_str(current) or ""
    if cur == "claude":  # deprecated alias ST migrates to merge on load
        cur = "merge"

    reasons: list[str] = []
    kind: PPPAdviceKind
    if cur == "":
        kind = "unset"
        value: str = family.entry.ppp if family is not None else "merge"
        if family is not None:
            reasons.append(family.entry.reason)
        if tools_on and knows_tools:
            value = _with_tools(value)
    elif cur in TOOL_STRIPPING and tools_on and knows_tools:
        kind = "strips_tools"
        value = _with_tools(cur)
    elif cur in IMAGE_UNSAFE and inline_on and vision is True:
        kind = "images"
        value = _image_safe(cur)
    elif family is not None and cur in ("merge", "merge_tools") and family.entry.ppp != "merge":
        kind = "family"
        value = family.entry.ppp
        value = _with_tools(value) if cur == "merge_tools" else value
        reasons.append(family.entry.reason)
    else:
        return None

    if guard_images and value in IMAGE_UNSAFE:
        value = _image_safe(value)
        reasons.append(
            'Inline images are on, and the stricter modes turn images into the text "[Object]" '
            "(SillyTavern issue #3057), so a semi-strict mode is used instead."
        )
    fitted = _fit_to_version(value, allowed)
    if fitted is None or fitted in (cur, ""):
        return None
    if fitted != value:
        reasons.append(f"Your SillyTavern version does not know {value!r} yet, so {fitted!r} is used.")
    loses_tools = tools_on and not fitted.endswith(TOOLS_SUFFIX)
    return PPPAdvice(kind, cur, fitted, tuple(reasons), family, loses_tools)


PPP_LABELS: dict[str, str] = {
    "": "None",
    "merge": "Merge consecutive roles (no tools)",
    "semi": "Semi-strict (alternating roles; no tools)",
    "strict": "Strict (user first, alternating roles; no tools)",
    "single": "Single user message (no tools)",
    "merge_tools": "Merge consecutive roles (with tools)",
    "semi_tools": "Semi-strict (alternating roles; with tools)",
    "strict_tools": "Strict (user first, alternating roles; with tools)",
}


def ppp_label(value: str) -> str:
    return PPP_LABELS.get(value, value)
