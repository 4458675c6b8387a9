"""One NanoGPT key, every slot that needs it: which ST key slots a user's NanoGPT set-up reads.

The slots (``sillytavern/secrets_writer.py`` ``SLOT_SECRETS``) and who reads them, the same in ST 1.13.5,
1.18.0 and 1.19.0:
- ``api_key_nanogpt``: the built-in NanoGPT Chat Completion source, and Image Generation with the NanoGPT
  source: ``/api/sd/nanogpt/models`` and ``/generate`` call ``readSecret(..., SECRET_KEYS.NANOGPT)``
  (1.13.5 src/endpoints/stable-diffusion.js L1076 and L1116; 1.18.0 L1392 and L1431; 1.19.0 L1393 and
  L1432). The image source is ``extension_settings.sd.source`` in settings.json (1.13.5
  public/scripts/extensions/stable-diffusion/index.js L86 ``nanogpt: 'nanogpt'``; 1.18.0 L90), and the
  page lists no image models without that key (``loadNanoGPTModels``: 1.18.0 L2243-2247).
- ``api_key_custom``: the Custom (OpenAI-compatible) source, when its URL is NanoGPT's.
- ``api_key_generic``: Text Completion's Generic type, when its URL is NanoGPT's.

A slot whose URL is not NanoGPT's belongs to another provider and is never counted here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.doctor.rules.common import as_mapping, as_str, oai
from nanogpt_companion.doctor.rules.meta import make_finding
from nanogpt_companion.nanogpt.endpoints import parse_nanogpt_url
from nanogpt_companion.sillytavern.secrets_writer import SLOT_SECRETS, SlotName

SLOT_LABELS: dict[SlotName, str] = {
    "nanogpt": "NanoGPT (built-in)",
    "custom": "Custom (OpenAI-compatible)",
    "generic": "Text Completion Generic",
}


def _image_settings(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    extensions = as_mapping(settings.get("extension_settings")) or {}
    return as_mapping(extensions.get("sd")) or {}


def image_generation_uses_nanogpt(settings: Mapping[str, Any]) -> bool:
    return as_str(_image_settings(settings).get("source")) == "nanogpt"


def needed_key_slots(settings: Mapping[str, Any]) -> dict[SlotName, list[str]]:
    """Slot -> what in this user's settings reads it for NanoGPT (human words, for the explanation).

    Active connections and configured-but-inactive NanoGPT connections both count: a user who switches back
    to a stale slot gets "Missing key" or a rejected key, which is what this prevents.
    """
    view = oai(settings)
    needed: dict[SlotName, list[str]] = {}
    main_api = as_str(settings.get("main_api"))
    source = as_str(view.get("chat_completion_source"))
    if source == "nanogpt" and main_api == "openai":
        needed.setdefault("nanogpt", []).append("Chat Completion (NanoGPT source)")
    if parse_nanogpt_url(view.get("custom_url")) is not None:
        needed.setdefault("custom", []).append("Chat Completion (Custom source)")
    textgen = as_mapping(settings.get("textgenerationwebui_settings")) or {}
    urls = as_mapping(textgen.get("server_urls")) or {}
    if parse_nanogpt_url(urls.get("generic"), for_text_completion=True) is not None:
        needed.setdefault("generic", []).append("Text Completion (Generic)")
    if image_generation_uses_nanogpt(settings):
        needed.setdefault("nanogpt", []).append("Image Generation")
    return {slot: needed[slot] for slot in SLOT_SECRETS if slot in needed}


def _install_action(slots: list[SlotName]) -> dict[str, Any]:
    return {"kind": "install_key", "slots": list(slots)}


def check_image_key(ctx: DoctorContext) -> list[Finding]:
    if ctx.key_slots is None or not image_generation_uses_nanogpt(ctx.settings):
        return []
    if ctx.key_slots.get("nanogpt") != "empty":
        return []
    model = as_str(_image_settings(ctx.settings).get("model")) or None
    return [
        make_finding(
            "image.key",
            explanation=(
                "Image Generation is set to NanoGPT, and SillyTavern's image routes read only the built-in "
                "NanoGPT key, which is empty here (your key is in another slot, as with NanoGPT's Custom "
                "set-up). So the image model list stays empty and generating fails without saying why. "
                "The companion can put your NanoGPT key there (in SillyTavern's own format, undoable)."
            ),
            severity="error",
            extra="nanogpt-empty",
            details={"action": _install_action(["nanogpt"]), "image_model": model},
        )
    ]


def check_key_slots(ctx: DoctorContext) -> list[Finding]:
    if ctx.key_slots is None:
        return []
    needed = needed_key_slots(ctx.settings)
    image_only = needed.get("nanogpt") == ["Image Generation"]
    stale: list[SlotName] = []
    missing: list[SlotName] = []
    for slot in needed:
        state = ctx.key_slots.get(slot)
        if slot == "nanogpt" and image_only:
            continue  # image.key explains that case in its own words
        if state == "other":
            stale.append(slot)
        elif state == "empty":
            missing.append(slot)
    if not stale and not missing:
        return []
    parts: list[str] = []
    for slot in stale:
        parts.append(
            f"{SLOT_LABELS[slot]} (used by {', '.join(needed[slot])}) holds a different key than your "
            "NanoGPT key; if you rotated your key, this one is the old one and NanoGPT will reject it."
        )
    for slot in missing:
        parts.append(f"{SLOT_LABELS[slot]} (used by {', '.join(needed[slot])}) has no key.")
    holding = [SLOT_LABELS[s] for s in needed if ctx.key_slots.get(s) == "ours"]
    summary = f" Your key is in: {', '.join(holding)}." if holding else ""
    targets = stale + missing
    return [
        make_finding(
            "keys.slots",
            explanation=" ".join(parts) + summary + " One click puts your NanoGPT key in every slot listed.",
            severity="warning",
            extra="|".join(f"{s}={ctx.key_slots.get(s)}" for s in needed),
            details={
                "slots": {slot: ctx.key_slots.get(slot) for slot in needed},
                "stale": stale,
                "missing": missing,
                "action": _install_action(targets),
            },
        )
    ]
