"""Prompt Post-Processing rules: the live setting, and the presets and profiles that can overwrite it.

PPP is the most common cause of "strange formatting" with NanoGPT (its own ST guide ends by telling users
to toggle it). ST has one global value, but presets (with ``bind_preset_to_connection``) and Connection
Manager profiles re-apply their own copy when selected, so fixing only settings.json would not stick.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor.rules.common import (
    Connection,
    PPPAdvice,
    as_bool,
    as_mapping,
    as_str,
    cc_connection,
    connection_of,
    oai,
    oai_prefix,
    plan_ppp,
)
from nanogpt_companion.doctor.rules.meta import make_finding
from nanogpt_companion.sillytavern.behaviour import ppp_applied
from nanogpt_companion.sillytavern.labels import ppp_label
from nanogpt_companion.sillytavern.ppp import PPP_KEY
from nanogpt_companion.sillytavern.version import STVersion, format_version


def _where(conn: Connection) -> str:
    model = f" with the model {conn.model}" if conn.model else ""
    source = "the NanoGPT source" if conn.kind == "nanogpt" else "a Custom connection to NanoGPT"
    return f"{source}{model}"


def _explain(advice: PPPAdvice, conn: Connection, version: STVersion) -> str:
    cur = ppp_label(advice.current, version)
    new = ppp_label(advice.value, version)
    if advice.kind == "unset":
        text = (
            f'Prompt Post-Processing is set to "None" for {_where(conn)}. Many models behind NanoGPT get '
            "confused by several messages in a row from the same side, which shows up as strange formatting "
            f'or ignored instructions. "{new}" joins such messages into one and changes nothing else.'
        )
    elif advice.kind == "strips_tools":
        text = (
            f'Function calling is on, but Prompt Post-Processing "{cur}" removes tools from every request, '
            f'so the model can never call them. "{new}" does the same clean-up and keeps the tools.'
        )
    else:
        text = (
            f"The model {conn.model} belongs to a family whose chat format is stricter than usual, so "
            f'"{cur}" is not enough. "{new}" is the recommended mode for it.'
        )
    extra = [reason for reason in advice.reasons if reason]
    if advice.loses_tools:
        extra.append(
            'Function calling is on, and your SillyTavern version has no "with tools" modes yet, so this '
            "change would stop tool calls; that is why it is only suggested."
        )
    return " ".join([text, *extra])


def _ignored_finding(ctx: DoctorContext, conn: Connection, current: str) -> Finding:
    """The NanoGPT source on ST < 1.13.0: ST neither shows nor applies PPP there, so writing it is useless."""
    shown = ctx.st_version.display or "older than 1.13.0"
    return make_finding(
        "ppp.nanogpt",
        title="Prompt Post-Processing is ignored for the NanoGPT source in this SillyTavern",
        explanation=(
            f"SillyTavern {shown} applies Prompt Post-Processing only to the Custom (OpenAI-compatible) and "
            "OpenRouter sources; for the NanoGPT source it is hidden and ignored, whatever the setting says. "
            "SillyTavern 1.13.0 and newer apply it to every source. If a model behind NanoGPT formats "
            "strangely, update SillyTavern, or use the Custom source with https://nano-gpt.com/api/v1, "
            "where Prompt Post-Processing works."
        ),
        severity="info",
        extra=f"ppp-ignored:{format_version(ctx.st_version.version) if ctx.st_version.version else ''}",
        details={"kind": "ignored", "current": current},
    )


def _details(advice: PPPAdvice) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": advice.kind, "current": advice.current, "suggested": advice.value}
    if advice.family is not None:
        details["family"] = {
            "id": advice.family.entry.id,
            "origin": advice.family.origin,
            "reason": advice.family.entry.reason,
            "source": advice.family.entry.source,
        }
    return details


def check_ppp_nanogpt(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None:
        return []
    view = oai(ctx.settings)
    if ppp_applied(ctx.st_version, conn.kind) is False:
        return [_ignored_finding(ctx, conn, as_str(view.get(PPP_KEY)) or "")]
    advice = plan_ppp(ctx, view, conn, view.get(PPP_KEY))
    if advice is None or advice.kind == "strips_tools":  # strips_tools belongs to ppp.tools
        return []
    # Only filling an unset value is harmless enough to apply unasked; replacing a user's pick is a question.
    auto = advice.kind == "unset" and not advice.loses_tools
    patch = (
        PatchOp(
            path=(*oai_prefix(ctx.settings), PPP_KEY),
            value=advice.value,
            old=view.get(PPP_KEY),
            existed=PPP_KEY in view,
        ),
    )
    return [
        make_finding(
            "ppp.nanogpt",
            explanation=_explain(advice, conn, ctx.st_version),
            severity="warning" if advice.kind == "unset" else "info",
            patch=patch,
            details=_details(advice),
            default_policy="auto" if auto else "ask",
        )
    ]


def check_ppp_tools(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    if conn is None:
        return []
    view = oai(ctx.settings)
    advice = plan_ppp(ctx, view, conn, view.get(PPP_KEY))
    if advice is None or advice.kind != "strips_tools":
        return []
    patch = (PatchOp(path=(*oai_prefix(ctx.settings), PPP_KEY), value=advice.value, old=view.get(PPP_KEY)),)
    return [
        make_finding(
            "ppp.tools",
            explanation=_explain(advice, conn, ctx.st_version),
            severity="warning",
            patch=patch,
            details=_details(advice),
        )
    ]


def check_preset_ppp(ctx: DoctorContext) -> list[Finding]:
    settings_view = oai(ctx.settings)
    # bind_preset_to_connection defaults to true; only an explicit false stops presets overwriting PPP.
    if as_bool(settings_view.get("bind_preset_to_connection")) is False:
        return []
    findings: list[Finding] = []
    for stem in sorted(ctx.presets):
        preset = as_mapping(ctx.presets[stem])
        if preset is None or PPP_KEY not in preset:
            continue  # a preset without the key leaves PPP alone (the shipped Default.json is like that)
        # What the connection looks like right after selecting this preset.
        view = {**settings_view, **preset}
        conn = connection_of(view)
        if conn is None:
            continue
        advice = plan_ppp(ctx, view, conn, preset.get(PPP_KEY))
        if advice is None:
            continue
        explanation = (
            f'Selecting the Chat Completion preset "{stem}" sets Prompt Post-Processing back to '
            f'"{ppp_label(advice.current, ctx.st_version)}". ' + _explain(advice, conn, ctx.st_version)
        )
        findings.append(
            make_finding(
                "preset.ppp",
                explanation=explanation,
                severity="warning" if advice.kind in ("unset", "strips_tools") else "info",
                patch=(PatchOp(path=(PPP_KEY,), value=advice.value, old=preset.get(PPP_KEY)),),
                target="preset",
                preset=stem,
                details=_details(advice),
            )
        )
    return findings


PROFILE_PPP_KEY = "prompt-post-processing"


def _profile_view(settings_view: Mapping[str, Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """The connection a profile switches to: its own api / url / model over the current settings."""
    view = dict(settings_view)
    api = as_str(profile.get("api"))
    if api:
        view["chat_completion_source"] = api
    url = as_str(profile.get("api-url"))
    if url:
        view["custom_url"] = url
    model = as_str(profile.get("model"))
    if model:
        view["nanogpt_model" if view.get("chat_completion_source") == "nanogpt" else "custom_model"] = model
    return view


def check_profile_ppp(ctx: DoctorContext) -> list[Finding]:
    extension_settings = as_mapping(ctx.settings.get("extension_settings"))
    manager = as_mapping(extension_settings.get("connectionManager")) if extension_settings else None
    profiles = manager.get("profiles") if manager else None
    if not isinstance(profiles, list):
        return []
    settings_view = oai(ctx.settings)
    findings: list[Finding] = []
    for index, raw in enumerate(profiles):
        profile = as_mapping(raw)
        if profile is None or profile.get("mode") != "cc":
            continue
        exclude = profile.get("exclude")
        if isinstance(exclude, list) and PROFILE_PPP_KEY in exclude:
            continue
        stored = as_str(profile.get(PROFILE_PPP_KEY))
        # Profiles store the `/ppp` argument: "none" means "" (ST's `/ppp` reports empty as "none"); an
        # empty or missing value is skipped when the profile is applied, so it cannot reset anything.
        if not stored:
            continue
        current = "" if stored == "none" else stored
        view = _profile_view(settings_view, profile)
        conn = connection_of(view)
        if conn is None:
            continue
        advice = plan_ppp(ctx, view, conn, current)
        if advice is None:
            continue
        name = as_str(profile.get("name")) or f"#{index + 1}"
        explanation = (
            f'Loading the connection profile "{name}" sets Prompt Post-Processing to '
            f'"{ppp_label(advice.current, ctx.st_version)}". ' + _explain(advice, conn, ctx.st_version)
        )
        details = _details(advice)
        details["profile"] = {"index": index, "id": as_str(profile.get("id")), "name": name}
        findings.append(
            make_finding(
                "profile.ppp",
                explanation=explanation,
                severity="warning" if advice.kind in ("unset", "strips_tools") else "info",
                patch=(
                    PatchOp(
                        path=("extension_settings", "connectionManager", "profiles", index, PROFILE_PPP_KEY),
                        value=advice.value,
                        old=stored,
                    ),
                ),
                details=details,
            )
        )
    return findings
