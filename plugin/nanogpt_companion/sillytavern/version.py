"""Which SillyTavern version wrote a user's files, and what that version understands.

The doctor must never write a value the user's ST does not know: an unknown Prompt Post-Processing value
falls through ST's ``postProcessPrompt`` as "no processing", so a wrong guess silently undoes the fix.
Detection therefore only claims a capability when the evidence proves it (``currentVersion`` in
settings.json, or a key that only newer versions write). Key evidence gives a *lower* bound; a few keys and
the legacy secrets format also give an *upper* bound, which is what "older than" questions need.

Version facts come from the team's SillyTavern reference (shared/reference/sillytavern.md),
section 0 (the first release of each feature).
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Version = tuple[int, int, int]
VersionSource = Literal["currentVersion", "keys", "unknown"]
SecretsFormat = Literal["list", "flat"]

# First release with each feature (reference section 0; each checked in that release's npm tarball, the
# file and line given in doctor/rules/README.md).
V_NANOGPT_SOURCE: Version = (1, 12, 8)
V_SEMI_PPP: Version = (1, 12, 10)  # `semi` PPP and `show_thoughts` landed together
V_WEB_SEARCH: Version = (1, 12, 13)
V_CUSTOM_REASONING: Version = (1, 12, 13)  # 13f76c974: the Custom source reads the model's reasoning
V_SINGLE_PPP: Version = (1, 13, 0)
V_PPP_ALL_SOURCES: Version = (1, 13, 0)  # ade45b6cd: before it, PPP only for Custom and OpenRouter
V_TOOLS_PPP: Version = (1, 13, 1)
V_LIST_SECRETS: Version = (1, 13, 1)
V_NANOGPT_ONLINE: Version = (1, 13, 2)
# 5eea41d31/285b09ceb: the NanoGPT source reads the detailed model list: images only to `capabilities.vision`
# models, and the context size capped at the model's `context_length`.
V_NANOGPT_MODEL_DETAILS: Version = (1, 13, 4)
V_NANOGPT_REASONING: Version = (1, 13, 5)  # the NanoGPT source shows the model's reasoning
V_MEDIA_INLINING: Version = (1, 15, 0)
V_NANOGPT_TOOLS: Version = (1, 16, 0)  # 0c8d74da0: tool calling for the NanoGPT source
V_NANOGPT_PROVIDER: Version = (1, 18, 0)

# Keys in `oai_settings` that only a version >= the given one writes (ST saves its whole in-memory state,
# so a key a version knows is always present in a file it saved).
_KEY_LOWER_BOUNDS: tuple[tuple[str, Version], ...] = (
    ("nanogpt_model", V_NANOGPT_SOURCE),
    ("show_thoughts", V_SEMI_PPP),
    ("enable_web_search", V_WEB_SEARCH),
    ("media_inlining", V_MEDIA_INLINING),
    ("nanogpt_provider", V_NANOGPT_PROVIDER),
)

_VERSION_RE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: object) -> Version | None:
    """``"1.18.0"`` (or ``"1.13.0-staging"``, ``"1.12"``) -> a tuple; anything else -> None."""
    if not isinstance(text, str):
        return None
    match = _VERSION_RE.match(text)
    if match is None:
        return None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


@dataclass(frozen=True)
class STVersion:
    """What we know about the ST version.

    ``version`` is exact when ``source == "currentVersion"``; with ``source == "keys"`` it is the lowest
    version the evidence proves (the real one may be newer). ``before`` is an exclusive upper bound the
    evidence proves (e.g. ``image_inlining`` without ``media_inlining`` -> before 1.15.0), or None.
    """

    version: Version | None
    source: VersionSource
    before: Version | None = None

    @property
    def exact(self) -> bool:
        return self.source == "currentVersion" and self.version is not None

    def at_least(self, wanted: Version) -> bool:
        """True only when the evidence proves the version is >= ``wanted``."""
        return self.version is not None and self.version >= wanted

    def older_than(self, wanted: Version) -> bool:
        """True only when the evidence proves the version is < ``wanted``."""
        if self.exact and self.version is not None:
            return self.version < wanted
        return self.before is not None and self.before <= wanted

    @property
    def knows_semi_ppp(self) -> bool:
        return self.at_least(V_SEMI_PPP)

    @property
    def knows_single_ppp(self) -> bool:
        return self.at_least(V_SINGLE_PPP)

    @property
    def knows_tools_ppp(self) -> bool:
        return self.at_least(V_TOOLS_PPP)

    @property
    def list_secrets(self) -> bool:
        return self.at_least(V_LIST_SECRETS)

    @property
    def media_inlining(self) -> bool:
        """True: the inline-media key is ``media_inlining``; else it is (or may be) ``image_inlining``."""
        return self.at_least(V_MEDIA_INLINING)

    @property
    def nanogpt_provider(self) -> bool:
        return self.at_least(V_NANOGPT_PROVIDER)

    @property
    def nanogpt_source(self) -> bool:
        return self.at_least(V_NANOGPT_SOURCE)

    @property
    def nanogpt_web_search(self) -> bool:
        """The built-in NanoGPT source honours "Enable web search" (``:online`` suffix) from 1.13.2."""
        return self.at_least(V_NANOGPT_ONLINE)

    @property
    def display(self) -> str | None:
        """``"1.18.0"`` when exact, ``">=1.15.0"`` from key evidence, None when nothing is known."""
        if self.version is None:
            return None
        text = format_version(self.version)
        return text if self.exact else f">={text}"


UNKNOWN_VERSION = STVersion(version=None, source="unknown")


def _oai_settings(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    # Very old files kept Chat Completion settings flat at top level; ST still loads them that way.
    oai = settings.get("oai_settings")
    return oai if isinstance(oai, Mapping) else settings


def detect_st_version(settings: Mapping[str, Any], secrets_format: SecretsFormat | None = None) -> STVersion:
    """Detect the version from settings.json (parsed) and, optionally, the shape of secrets.json.

    ``currentVersion`` wins: ST writes it from the running client on every save. Without it, each key
    that only newer versions write raises the lower bound, and legacy-only evidence lowers the upper one.
    """
    exact = parse_version(settings.get("currentVersion"))
    if exact is not None:
        return STVersion(version=exact, source="currentVersion")

    oai = _oai_settings(settings)
    lower: Version | None = None
    for key, bound in _KEY_LOWER_BOUNDS:
        if key in oai and (lower is None or bound > lower):
            lower = bound
    if secrets_format == "list" and (lower is None or lower < V_LIST_SECRETS):
        lower = V_LIST_SECRETS

    before: Version | None = None
    if "image_inlining" in oai and "media_inlining" not in oai:
        before = V_MEDIA_INLINING
    if secrets_format == "flat":
        # ST >= 1.13.1 migrates flat secrets at every start, so a flat file was last touched by an older ST.
        before = V_LIST_SECRETS if before is None else min(before, V_LIST_SECRETS)
    if lower is not None and before is not None and lower >= before:
        # Contradictory evidence (e.g. hand-edited files): claim nothing rather than pick a side.
        return UNKNOWN_VERSION
    if lower is None and before is None:
        return UNKNOWN_VERSION
    return STVersion(version=lower, source="keys", before=before)
