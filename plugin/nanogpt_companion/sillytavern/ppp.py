"""What each Prompt Post-Processing value does in SillyTavern, and which versions know it.

These are facts about ST's code, not advice: every row is checked against ST's own converter
(``postProcessPrompt`` in ``src/prompt-converters.js``) run under Node for each installed version by
``tests/doctor/test_ppp_oracle.py``, and the value list against that version's ``PROMPT_PROCESSING_TYPE`` and
the options of its ``#custom_prompt_post_processing`` select (``public/index.html``). Read by hand for the
versions in between (npm tarballs): 1.12.7 and 1.12.8 ``mergeMessages`` (images), 1.12.10 (``semi``),
1.13.0 (``single``), 1.13.1 (``*_tools``). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from nanogpt_companion.sillytavern.version import (
    V_NANOGPT_SOURCE,
    V_SEMI_PPP,
    V_SINGLE_PPP,
    V_TOOLS_PPP,
    STVersion,
    Version,
)

PPP_KEY = "custom_prompt_post_processing"
TOOLS_SUFFIX = "_tools"
# ST 1.12.8 (6ae120900) made mergeMessages keep image parts (it swaps them for tokens and restores them);
# 1.12.7 turned an image turn merged with its neighbour into "[object Object]" in every mode.
V_IMAGES_SURVIVE_PPP: Version = V_NANOGPT_SOURCE


@dataclass(frozen=True)
class PPPMode:
    """One value of ``custom_prompt_post_processing`` and what ST's converter does with it."""

    value: str
    since: Version
    keeps_tools: bool  # tool_calls and `tool` messages survive (no-tools modes turn results into user text)
    merges_roles: bool  # consecutive same-role messages become one
    system_to_user: bool  # a system message after the first one becomes a user message
    user_first: bool  # a placeholder user turn is inserted when the chat would not start with one
    single_message: bool  # everything is squashed into one user message
    folds_names: bool  # `name` fields are written into the text and dropped


PPP_MODES: tuple[PPPMode, ...] = (
    PPPMode("", (0, 0, 0), True, False, False, False, False, False),
    PPPMode("merge", (1, 11, 8), False, True, False, False, False, True),
    PPPMode("strict", (1, 11, 8), False, True, True, True, False, True),
    PPPMode("semi", V_SEMI_PPP, False, True, True, False, False, True),
    PPPMode("single", V_SINGLE_PPP, False, True, True, True, True, True),
    PPPMode("merge_tools", V_TOOLS_PPP, True, True, False, False, False, True),
    PPPMode("semi_tools", V_TOOLS_PPP, True, True, True, False, False, True),
    PPPMode("strict_tools", V_TOOLS_PPP, True, True, True, True, False, True),
)
MODES: dict[str, PPPMode] = {mode.value: mode for mode in PPP_MODES}
# Every value a user can pick. `claude` is left out on purpose: deprecated, ST migrates it to `merge` on load
# (openai.js, 1.19.0 L4278), so nobody should be told to pick it.
ALL_PPP_VALUES: frozenset[str] = frozenset(MODES)
DEPRECATED_ALIASES: dict[str, str] = {"claude": "merge"}
TOOL_STRIPPING: frozenset[str] = frozenset(
    {mode.value for mode in PPP_MODES if not mode.keeps_tools} | set(DEPRECATED_ALIASES)
)


def allowed_ppp_values(version: STVersion) -> frozenset[str]:
    """The PPP values this version is proven to understand (always includes ``""`` and ``merge``).

    ``merge`` and ``strict`` predate the NanoGPT source itself, so any ST a NanoGPT user runs knows them.
    An unknown value falls through ``postProcessPrompt`` as "no processing", which is why this matters.
    """
    floor = version.version or V_NANOGPT_SOURCE
    return frozenset(mode.value for mode in PPP_MODES if floor >= mode.since)


def normalise(value: object) -> str:
    """The value ST acts on: ``None``/non-strings are "" (None), deprecated aliases their replacement."""
    text = value if isinstance(value, str) else ""
    return DEPRECATED_ALIASES.get(text, text)


def with_tools(value: str) -> str:
    """The "with tools" twin. ``single`` has none; ``strict_tools`` keeps its "user first" promise."""
    if value == "" or value.endswith(TOOLS_SUFFIX):
        return value
    return "strict_tools" if value == "single" else value + TOOLS_SUFFIX


# Nearest value an older ST knows, one step at a time (tools -> no tools, single -> semi -> merge).
_STEP_DOWN: dict[str, str] = {
    "strict_tools": "strict",
    "semi_tools": "semi",
    "merge_tools": "merge",
    "single": "semi",
    "semi": "merge",
    "strict": "merge",
}


def fit_to_version(value: str, allowed: frozenset[str]) -> str | None:
    """Step down to the nearest value this ST knows; None if nothing sensible is left."""
    current: str | None = value
    while current is not None and current not in allowed:
        current = _STEP_DOWN.get(current)
    return current
