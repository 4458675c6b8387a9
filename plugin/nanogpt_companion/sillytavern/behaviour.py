"""What a given ST version does for a NanoGPT connection, per Chat Completion source.

Answers are three-valued: ``True`` when the evidence proves ST does it, ``False`` when it proves ST does
not, ``None`` when the detected version range straddles the release that changed it. Rules act only on a
proven answer and pick the harmless side otherwise. Each function names the ST code it reflects (versions
read from the npm tarballs; the full list is in ``doctor/rules/README.md``). Pure: no I/O.
"""

from __future__ import annotations

from typing import Literal

from nanogpt_companion.sillytavern.version import (
    V_CUSTOM_REASONING,
    V_NANOGPT_MODEL_DETAILS,
    V_NANOGPT_REASONING,
    V_NANOGPT_TOOLS,
    V_PPP_ALL_SOURCES,
    STVersion,
    Version,
)

Source = Literal["nanogpt", "custom"]


def since(version: STVersion, release: Version) -> bool | None:
    """Is ``version`` at least ``release``: True, False, or None when the evidence does not say."""
    if version.at_least(release):
        return True
    if version.older_than(release):
        return False
    return None


def ppp_applied(version: STVersion, source: Source) -> bool | None:
    """Does ST post-process this source's prompt at all?

    Before 1.13.0 only the Custom and OpenRouter sources were (chat-completions.js 1.12.14 L1152-1153,
    ``postProcessTypes``; the select was hidden for others: index.html ``data-source="custom,openrouter"``).
    From 1.13.0 (ade45b6cd) every source is (chat-completions.js 1.13.0 L1214-1221, 1.19.0 L2246-2252).
    """
    return True if source == "custom" else since(version, V_PPP_ALL_SOURCES)


def tool_calling(version: STVersion, source: Source) -> bool | None:
    """Does ST send tools to this source when "Enable function calling" is on?

    ``ToolManager.isToolCallingSupported`` lists the sources: Custom in every NanoGPT-era release
    (tool-calling.js 1.12.8 L523), NanoGPT only from 1.16.0 (0c8d74da0; 1.16.0 L664, 1.19.0 L680; absent
    from 1.13.5 L644-664 and 1.14.0).
    """
    return True if source == "custom" else since(version, V_NANOGPT_TOOLS)


def reasoning_shown(version: STVersion, source: Source) -> bool | None:
    """Does ST read the model's reasoning from this source's replies (``reasoning``/``reasoning_content``)?

    Custom from 1.12.13 (13f76c974; reasoning.js 1.12.13 L81-84, openai.js L2285-2291; 1.12.12 has no case).
    NanoGPT from 1.13.5 (reasoning.js 1.13.5 L129-133, openai.js L2684; 1.13.4 lists other sources only).
    """
    return since(version, V_CUSTOM_REASONING if source == "custom" else V_NANOGPT_REASONING)


def images_sent(version: STVersion, source: Source, vision: bool | None) -> bool | None:
    """With inline images on, does ST put the chat's images into the request for this model?

    ``isImageInliningSupported`` (openai.js): Custom always (``case CUSTOM: return true``, 1.13.5 L5796,
    1.19.0 L6322). NanoGPT not before 1.13.4 (no case, ``default: false``), then only when the model list says
    ``capabilities.vision`` (1.13.4 L5740, 1.13.5 L5815, 1.19.0 L6343).
    """
    if source == "custom":
        return True
    if vision is False:
        return False
    newer = since(version, V_NANOGPT_MODEL_DETAILS)
    if newer is False:
        return False
    return True if newer and vision else None


def context_capped(version: STVersion, source: Source) -> bool | None:
    """Does ST itself keep the context size within the model's ``context_length``?

    The NanoGPT source from 1.13.4 (``getNanoGptMaxContext``, openai.js 1.13.4 L4726, 1.13.5 L4787 and
    L5166-5169, 1.19.0 L5457); before, a fixed 128k slider maximum (1.13.3 L4911-4914). Custom never.
    """
    return False if source == "custom" else since(version, V_NANOGPT_MODEL_DETAILS)
