"""Text Completion pointed at NanoGPT through ST's "Generic (OpenAI-compatible)" type.

What ST does there (src/endpoints/backends/text-completions.js, the same in 1.13.5 and 1.19.0): the server URL
loses one trailing ``/`` and one trailing ``/v1`` (``trimV1``, util.js) and gets ``/v1/completions`` appended
(1.13.5 L284-297, 1.19.0 L294-307); the body is cut down to OpenAI's completion keys (``OPENAI_KEYS``,
constants.js 1.13.5 L313-328, 1.19.0 L341-356; text-completions.js 1.13.5 L345-347, 1.19.0 L355-357), so
samplers such as Min P, Top K or Repetition Penalty never reach NanoGPT, and ``stop`` keeps 4 entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor.rules.common import as_int, as_mapping, as_str, lookup_model
from nanogpt_companion.doctor.rules.features import context_findings
from nanogpt_companion.doctor.rules.meta import make_finding
from nanogpt_companion.domain import CatalogEntry
from nanogpt_companion.nanogpt.endpoints import ParsedNanoURL, get_endpoint, parse_nanogpt_url

MAX_LISTED = 50
MAX_CONTEXT_DEFAULT = 8192
MAX_CONTEXT_UNLOCKED = 512 * 1024
# What the Generic type keeps of a request: temperature, top_p, frequency/presence penalty, seed, stop,
# logit bias, max tokens (plus model, prompt, stream, logprobs, n, best_of).
SENT_SAMPLERS = (
    "Temperature, Top P, Frequency and Presence Penalty, Seed, stop strings (up to 4) and the response length"
)
GENERIC_SENDS = (
    f"ST's Generic (OpenAI-compatible) type sends NanoGPT only {SENT_SAMPLERS}; other samplers (Min P, "
    "Top K, Repetition Penalty and the like) are dropped before the request leaves ST, so they have no "
    "effect here."
)
# NanoGPT's SillyTavern guide: for Text Completion, Arli AI-served finetunes work best. An explicit
# `text_completion` capability flag, if NanoGPT ever sends one, wins over this vendor heuristic.
TEXT_COMPLETION_VENDORS: frozenset[str] = frozenset({"arliai"})


@dataclass(frozen=True)
class TextConnection:
    settings: Mapping[str, Any]  # textgenerationwebui_settings
    url: ParsedNanoURL
    model: str


def text_connection(ctx: DoctorContext) -> TextConnection | None:
    """The active Text Completion connection when it is the Generic type pointed at NanoGPT."""
    if ctx.settings.get("main_api") != "textgenerationwebui":
        return None
    textgen = as_mapping(ctx.settings.get("textgenerationwebui_settings"))
    if textgen is None or textgen.get("type") != "generic":
        return None
    server_urls = as_mapping(textgen.get("server_urls"))
    url = parse_nanogpt_url(server_urls.get("generic"), for_text_completion=True) if server_urls else None
    if url is None:
        return None
    return TextConnection(textgen, url, (as_str(textgen.get("generic_model")) or "").strip())


def completions_url(base: str) -> str:
    """The URL ST posts to: ``trimV1(base) + '/v1/completions'``."""
    trimmed = base.strip().removesuffix("/")
    return trimmed.removesuffix("/v1") + "/v1/completions"


def check_textgen_endpoint(ctx: DoctorContext) -> list[Finding]:
    conn = text_connection(ctx)
    if conn is None or not conn.url.ok or conn.url.endpoint_id is None:
        return []  # a malformed URL is endpoint.url's job first
    endpoint = get_endpoint(conn.url.endpoint_id)
    if endpoint.text_completion:
        return []
    target = get_endpoint("v1").url_on(conn.url.host)
    return [
        make_finding(
            "textgen.endpoint",
            explanation=(
                f'The Text Completion "Server URL" is {conn.url.original}, NanoGPT\'s "{endpoint.title}" '
                f"address. ST sends Text Completion requests to {completions_url(conn.url.original)}, which "
                "NanoGPT does not serve: plain text completion exists only at "
                f"{completions_url(target)}. Use {target}."
            ),
            severity="error",
            patch=(
                PatchOp(
                    path=("textgenerationwebui_settings", "server_urls", "generic"),
                    value=target,
                    old=conn.url.original,
                ),
            ),
            details={"endpoint": conn.url.endpoint_id, "suggested": "v1"},
        )
    ]


def check_textgen_context(ctx: DoctorContext) -> list[Finding]:
    conn = text_connection(ctx)
    if conn is None or not conn.model:
        return []
    entry = lookup_model(ctx.catalogue, conn.model)
    limit = entry.context_length if entry is not None else None
    # Text Completion's context is ST's top-level `max_context` ("Context (tokens)"), not a textgen key.
    current = as_int(ctx.settings.get("max_context"))
    if limit is None or limit <= 0 or current is None or current <= 0:
        return []
    # ST's slider stops at 8192 unless "Unlocked" is ticked (power-user.js MAX_CONTEXT_DEFAULT /
    # MAX_CONTEXT_UNLOCKED, the same in 1.13.5 L75-77 and 1.19.0 L82-84): never suggest more than it takes.
    power_user = as_mapping(ctx.settings.get("power_user"))
    unlocked = power_user is not None and power_user.get("max_context_unlocked") is True
    ceiling = MAX_CONTEXT_UNLOCKED if unlocked else MAX_CONTEXT_DEFAULT
    return context_findings("textgen.context", ("max_context",), conn.model, current, limit, ceiling=ceiling)


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
    conn = text_connection(ctx)
    if conn is None or ctx.catalogue is None or not conn.model:
        return []
    entry = lookup_model(ctx.catalogue, conn.model)
    if entry is not None and text_completion_capable(entry) is True:
        return []
    capable = sorted(
        cid
        for cid, candidate in ctx.catalogue.items()
        if not candidate.is_router and text_completion_capable(candidate) is True
    )
    listed = ", ".join(capable[:5]) + (" and more" if len(capable) > 5 else "")
    if entry is None:
        problem = f"The Text Completion model {conn.model} is not in NanoGPT's model list."
    else:
        problem = (
            f"Text Completion is pointed at NanoGPT with {conn.model}, which is a chat "
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
            explanation=f"{problem}{suggestion} {GENERIC_SENDS}",
            severity="warning",
            extra=conn.model,
            details={
                "model": conn.model,
                "known": entry is not None,
                "text_completion_models": capable[:MAX_LISTED],
            },
        )
    ]
