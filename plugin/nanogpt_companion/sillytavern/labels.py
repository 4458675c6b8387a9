"""SillyTavern's own words for the settings the doctor touches, per version.

Findings, journal entries and the extension's toasts name a setting and its values the way the user sees
them in ST ("Prompt Post-Processing: None -> Merge consecutive roles"), never as raw keys. The texts are
the labels of each version's ``public/index.html`` (the heading or checkbox text next to the control, and
the option texts of selects); ``tests/doctor/test_st_labels.py`` checks them against every installed
version. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from nanogpt_companion.sillytavern.version import V_MEDIA_INLINING, V_TOOLS_PPP, STVersion

# Last key of a patch path -> (control id in index.html, label). The control id is what the label test
# looks for; the label is the text ST renders beside that control.
SETTING_LABELS: dict[str, tuple[str, str]] = {
    "custom_prompt_post_processing": ("custom_prompt_post_processing", "Prompt Post-Processing"),
    "prompt-post-processing": ("custom_prompt_post_processing", "Prompt Post-Processing"),
    "image_inlining": ("openai_image_inlining", "Send inline images"),
    "media_inlining": ("openai_media_inlining", "Send inline media"),
    "enable_web_search": ("openai_enable_web_search", "Enable web search"),
    "show_thoughts": ("openai_show_thoughts", "Request model reasoning"),
    "function_calling": ("openai_function_calling", "Enable function calling"),
    "openai_max_context": ("openai_max_context", "Context Size (tokens)"),
    "custom_url": ("custom_api_url_text", "Custom Endpoint (Base URL)"),
    "custom_model": ("custom_model_id", "Enter a Model ID"),
    "nanogpt_model": ("model_nanogpt_select", "NanoGPT Model"),
    "generic": ("generic_api_url_text", "Server URL"),  # textgenerationwebui_settings.server_urls.generic
    "max_context": ("max_context", "Context (tokens)"),
    "openai_max_tokens": ("openai_max_tokens", "Max Response Length (tokens)"),
    "auto_parse": ("reasoning_auto_parse", "Auto-Parse"),  # power_user.reasoning.auto_parse
}

# Option texts of #custom_prompt_post_processing. 1.13.1 (a5127a58e) added the "with tools" group and
# renamed the others "(no tools)"; before, `single` (1.13.0) and `semi` (1.12.10) had the plain names.
PPP_LABELS: dict[str, str] = {
    "": "None",
    "merge_tools": "Merge consecutive roles (with tools)",
    "semi_tools": "Semi-strict (alternating roles; with tools)",
    "strict_tools": "Strict (user first, alternating roles; with tools)",
    "merge": "Merge consecutive roles (no tools)",
    "semi": "Semi-strict (alternating roles; no tools)",
    "strict": "Strict (user first, alternating roles; no tools)",
    "single": "Single user message (no tools)",
}
PPP_LABELS_BEFORE_TOOLS: dict[str, str] = {
    "": "None",
    "merge": "Merge consecutive roles",
    "semi": "Semi-strict (alternating roles)",
    "strict": "Strict (user first, alternating roles)",
    "single": "Single user message",
}
_PPP_KEYS = frozenset({"custom_prompt_post_processing", "prompt-post-processing"})


def ppp_labels(version: STVersion) -> dict[str, str]:
    """The option texts this version shows (the newest wording when the version is unknown)."""
    return PPP_LABELS_BEFORE_TOOLS if version.older_than(V_TOOLS_PPP) else PPP_LABELS


def ppp_label(value: object, version: STVersion) -> str:
    text = "" if value is None or value == "none" else str(value)  # profiles store "" as "none"
    if text == "claude":
        text = "merge"  # deprecated alias; ST shows it as merge after loading
    return ppp_labels(version).get(text, text)


def inline_media_label(version: STVersion) -> str:
    """1.15 renamed "Send inline images" to "Send inline media" (and image_inlining to media_inlining)."""
    return SETTING_LABELS["media_inlining" if version.at_least(V_MEDIA_INLINING) else "image_inlining"][1]


def setting_label(path: Sequence[str | int]) -> str:
    key = str(path[-1]) if path else ""
    entry = SETTING_LABELS.get(key)
    return entry[1] if entry else key


def value_label(path: Sequence[str | int], value: object, version: STVersion) -> str:
    key = str(path[-1]) if path else ""
    if key in _PPP_KEYS:
        return ppp_label(value, version)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, int | float):
        return f"{value:,}"
    return str(value)


def describe_change(
    path: Sequence[str | int], old: object, new: object, version: STVersion, where: str | None = None
) -> str:
    """``Prompt Post-Processing: None → Merge consecutive roles (no tools)``, with ``where`` (a preset or a
    connection profile) in brackets after the setting's name."""
    name = setting_label(path) + (f" ({where})" if where else "")
    return f"{name}: {value_label(path, old, version)} → {value_label(path, new, version)}"
