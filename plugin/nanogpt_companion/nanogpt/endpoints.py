"""NanoGPT's OpenAI-compatible base URLs as data, plus URL checking and repair.

Users paste NanoGPT URLs into ST's Custom source (``custom_url``) and Text Completion ``generic`` server
URL by hand, so the doctor needs to recognise a NanoGPT URL in any of its common broken forms and say which
base it means. Facts: shared/reference/nanogpt-api.md sections 1, 5.3 and sillytavern.md 2.2, 2.6.
Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from nanogpt_companion.domain import AccountSnapshot

EndpointId = Literal["v1", "subscription", "paid", "personalized", "v1legacy", "v1thinking"]

NANOGPT_HOSTS: frozenset[str] = frozenset({"nano-gpt.com", "www.nano-gpt.com", "api.nano-gpt.com"})
_CANONICAL_HOST = "nano-gpt.com"


@dataclass(frozen=True)
class Endpoint:
    id: EndpointId
    path: str  # below the host, e.g. "/api/v1"
    title: str
    description: str
    chat_completion: bool
    text_completion: bool
    reasoning_field: Literal["reasoning", "reasoning_content", "content"]

    @property
    def url(self) -> str:
        return f"https://{_CANONICAL_HOST}{self.path}"

    def url_on(self, host: str) -> str:
        return f"https://{host}{self.path}"


# Text Completion: ST trims a trailing `/v1` and appends `/v1/completions` (sillytavern.md 2.6), so only the
# canonical base maps onto a documented completions route; the others would become `.../v1legacy/v1/...`.
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        id="v1",
        path="/api/v1",
        title="Standard (pay as you go + subscription)",
        description=(
            "The main NanoGPT address and the one ST's built-in NanoGPT source uses. Works for everyone: "
            "subscription models are covered by the subscription, everything else is paid from your balance. "
            "Reasoning arrives in a separate `reasoning` field, which ST shows as thoughts (the Custom "
            "source from 1.12.13 on, the built-in NanoGPT source from 1.13.5 on)."
        ),
        chat_completion=True,
        text_completion=True,
        reasoning_field="reasoning",
    ),
    Endpoint(
        id="subscription",
        path="/api/subscription/v1",
        title="Subscription only",
        description=(
            "Only models included in the NanoGPT subscription; requests never spend your prepaid balance. "
            "Best for subscribers who want to be sure nothing is billed on top."
        ),
        chat_completion=True,
        text_completion=False,
        reasoning_field="reasoning",
    ),
    Endpoint(
        id="paid",
        path="/api/paid/v1",
        title="Paid models only",
        description=(
            "Only models outside the subscription, always billed from your balance. Useful to browse what "
            "costs extra; most people do not need to chat through it."
        ),
        chat_completion=True,
        text_completion=False,
        reasoning_field="reasoning",
    ),
    Endpoint(
        id="personalized",
        path="/api/personalized/v1",
        title="Your visible models",
        description=(
            "The models you marked visible in your NanoGPT account (needs your API key). Handy to keep ST's "
            "model list short."
        ),
        chat_completion=True,
        text_completion=False,
        reasoning_field="reasoning",
    ),
    Endpoint(
        id="v1legacy",
        path="/api/v1legacy",
        title="Legacy reasoning format",
        description=(
            "Same models as the standard address, but reasoning comes in the older "
            "`reasoning_content` field, for apps that only read that one. SillyTavern reads both fields "
            "on the Custom source (since 1.12.13), so it gains nothing here."
        ),
        chat_completion=True,
        text_completion=False,
        reasoning_field="reasoning_content",
    ),
    Endpoint(
        id="v1thinking",
        path="/api/v1thinking",
        title="Reasoning inside the reply",
        description=(
            "Same models, but the model's reasoning is mixed into the normal reply "
            "text instead of a separate "
            "field. Only for apps that cannot show reasoning separately; ST's "
            "reasoning toggle has no effect here."
        ),
        chat_completion=True,
        text_completion=False,
        reasoning_field="content",
    ),
)
_BY_ID: dict[str, Endpoint] = {endpoint.id: endpoint for endpoint in ENDPOINTS}
_BY_PATH: dict[str, Endpoint] = {endpoint.path: endpoint for endpoint in ENDPOINTS}


def get_endpoint(endpoint_id: EndpointId) -> Endpoint:
    return _BY_ID[endpoint_id]


UrlProblem = Literal[
    "whitespace",
    "http",
    "no_scheme",
    "www_host",
    "missing_api",
    "trailing_chat_completions",
    "trailing_completions",
    "trailing_models",
    "trailing_slash",
    "duplicate_v1",
    "missing_version",
    "query_or_fragment",
    "letter_case",
    "unknown_path",
]

PROBLEM_TEXT: dict[UrlProblem, str] = {
    "whitespace": "it has spaces around or inside it",
    "http": "it starts with http:// instead of https://",
    "no_scheme": "https:// is missing at the start",
    "www_host": "it uses www.nano-gpt.com instead of nano-gpt.com",
    "missing_api": "the /api part is missing",
    "trailing_chat_completions": "it ends in /chat/completions, which ST adds by itself",
    "trailing_completions": "it ends in /completions, which ST adds by itself",
    "trailing_models": "it ends in /models, which ST adds by itself",
    "trailing_slash": "it ends with a slash",
    "duplicate_v1": "/v1 appears twice",
    "missing_version": "the /v1 part is missing",
    "query_or_fragment": "it has a ?query or #fragment that does not belong in a base URL",
    "letter_case": "it has capital letters where NanoGPT's address is all lower case",
    "unknown_path": "the path is not one of NanoGPT's API addresses",
}

# Problems that only look untidy: ST still reaches the right place.
COSMETIC_PROBLEMS: frozenset[UrlProblem] = frozenset({"trailing_slash", "www_host"})

_TRAILING: tuple[tuple[str, UrlProblem], ...] = (
    ("/chat/completions", "trailing_chat_completions"),
    ("/completions", "trailing_completions"),
    ("/models", "trailing_models"),
)
_KNOWN_SUFFIXES = ("v1", "subscription/v1", "paid/v1", "personalized/v1", "v1legacy", "v1thinking")


@dataclass(frozen=True)
class ParsedNanoURL:
    """A URL recognised as NanoGPT's. ``normalised`` is what it should be; ``problems`` say why not."""

    original: str
    host: str  # as normalised (lower case, www. dropped)
    endpoint_id: EndpointId | None
    normalised: str
    problems: tuple[UrlProblem, ...]
    for_text_completion: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def only_cosmetic(self) -> bool:
        return all(problem in COSMETIC_PROBLEMS for problem in self.problems)

    def describe(self) -> str:
        return "; ".join(PROBLEM_TEXT[problem] for problem in self.problems)


_WS_RE = re.compile(r"\s")


def parse_nanogpt_url(url: object, *, for_text_completion: bool = False) -> ParsedNanoURL | None:
    """Recognise a NanoGPT base URL, however mangled; None when it is not NanoGPT's (or not a string).

    ``for_text_completion``: ST's Text Completion ``generic`` type appends ``/v1/...`` itself after
    trimming one trailing ``/v1``, so there ``https://nano-gpt.com/api`` is a correct base too.
    """
    if not isinstance(url, str):
        return None
    problems: list[UrlProblem] = []
    text = url
    if _WS_RE.search(text):
        problems.append("whitespace")
        text = _WS_RE.sub("", text)
    if not text:
        return None
    if "://" not in text:
        # "nano-gpt.com/api/v1" typed without a scheme: ST would treat it as a relative path.
        text = "https://" + text
        problems.append("no_scheme")
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    if host not in NANOGPT_HOSTS:
        return None
    if parts.scheme.lower() != "https":
        problems.append("http")
    if host.startswith("www."):
        problems.append("www_host")
        host = host[len("www.") :]
    if parts.query or parts.fragment:
        problems.append("query_or_fragment")

    path = parts.path
    if len(path) > 1 and path.endswith("/"):
        problems.append("trailing_slash")
    segments = [segment for segment in path.split("/") if segment]
    path = "/" + "/".join(segments) if segments else ""
    changed = True
    while changed:
        changed = False
        for suffix, problem in _TRAILING:
            if path.lower().endswith(suffix):
                path = path[: -len(suffix)]
                if problem not in problems:
                    problems.append(problem)
                changed = True
    lowered = path.lower()
    collapsed = re.sub(r"(/v1)(?:/v1)+(?=/|$)", r"\1", lowered)
    if collapsed != lowered:
        problems.append("duplicate_v1")
        lowered = collapsed
    if lowered and not lowered.startswith("/api") and lowered.lstrip("/") in _KNOWN_SUFFIXES:
        problems.append("missing_api")
        lowered = "/api" + lowered

    endpoint_id: EndpointId | None
    if lowered in ("", "/api"):
        if for_text_completion and lowered == "/api":
            endpoint_id = "v1"
        else:
            problems.append("missing_version" if lowered == "/api" else "missing_api")
            lowered = "/api/v1"
            endpoint_id = "v1"
    elif lowered in _BY_PATH:
        endpoint_id = _BY_PATH[lowered].id
    else:
        problems.append("unknown_path")
        endpoint_id = None

    if endpoint_id is not None and (parts.netloc != parts.netloc.lower() or path != path.lower()):
        problems.append("letter_case")
    # An unknown path is kept as typed (minus what we are sure of): guessing would be worse.
    normalised = f"https://{host}{lowered}" if endpoint_id is not None else f"https://{host}{path}"
    return ParsedNanoURL(
        original=url,
        host=host,
        endpoint_id=endpoint_id,
        normalised=normalised,
        problems=tuple(problems),
        for_text_completion=for_text_completion,
    )


def normalise_nanogpt_url(url: str, *, for_text_completion: bool = False) -> str:
    """The corrected form of a NanoGPT URL; any other URL comes back unchanged."""
    parsed = parse_nanogpt_url(url, for_text_completion=for_text_completion)
    return url if parsed is None else parsed.normalised


def recommend_endpoint(account: AccountSnapshot | None) -> tuple[EndpointId, str]:
    """Which base URL fits this user, and a plain-language reason.

    Only the account decides, not the ST version: ST's Custom source reads reasoning from ``reasoning`` and
    ``reasoning_content`` alike since 1.12.13 (reasoning.js L81-84, 13f76c974) and from neither before, so
    the legacy address never shows reasoning that the standard one hides.
    """
    if account is not None and account.key_status == "rejected":
        return (
            "v1",
            "NanoGPT rejected your API key, so your plan is unknown; the standard address works for every "
            "account once the key is fixed.",
        )
    if account is not None and account.stale:
        # Never claim a subscription from data NanoGPT did not just confirm.
        return (
            "v1",
            "NanoGPT could not be asked about your plan just now; the standard address works for every "
            "account.",
        )
    subscription = account.subscription if account is not None else None
    if subscription is not None and subscription.active:
        if (subscription.recommended_mode or "").lower() == "paygo":
            return (
                "v1",
                "You have a subscription, but NanoGPT currently routes your requests as pay-as-you-go "
                "(for example because the quota is used up), so the standard address keeps working.",
            )
        return (
            "subscription",
            "You have an active NanoGPT subscription: the subscription address only offers included models, "
            "so nothing is billed from your balance by accident.",
        )
    return "v1", "The standard address works for every account and is what NanoGPT's SillyTavern guide uses."
