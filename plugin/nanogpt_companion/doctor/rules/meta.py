"""Rule ids, titles and default policies: the one list the engine, the API and the UI agree on.

Default policy is ``auto`` only where applying the fix cannot lose anything the user chose (setting an
unset PPP for NanoGPT); everything that replaces a value the user picked asks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nanogpt_companion.doctor.finding import Finding, PatchOp, Policy, Severity, TargetKind, finding_id


@dataclass(frozen=True)
class RuleMeta:
    id: str
    title: str
    default_policy: Policy
    summary: str
    # The rule says nothing without NanoGPT's model list (it judges the selected model), so a check run
    # without a catalogue must report it as skipped rather than as passed.
    needs_catalogue: bool = False


_META: tuple[RuleMeta, ...] = (
    RuleMeta(
        "ppp.nanogpt",
        "Prompt Post-Processing for NanoGPT",
        "auto",
        "Sets Prompt Post-Processing to a mode that suits NanoGPT's models when it is unset.",
    ),
    RuleMeta(
        "ppp.tools",
        "Prompt Post-Processing removes tools",
        "ask",
        "Function calling is on, but the Prompt Post-Processing mode strips tools from every request.",
    ),
    RuleMeta(
        "endpoint.url",
        "Malformed NanoGPT address",
        "ask",
        "Repairs a NanoGPT URL typed with http://, without /api, with /chat/completions and similar.",
    ),
    RuleMeta(
        "endpoint.tier",
        "Better NanoGPT address for your account",
        "ask",
        "Suggests the subscription, standard or legacy NanoGPT address to match your account and ST.",
    ),
    RuleMeta(
        "reasoning",
        "Model reasoning not requested",
        "ask",
        "A reasoning model is selected but ST is told not to show its thoughts.",
        needs_catalogue=True,
    ),
    RuleMeta(
        "web_search",
        "Web search does nothing here",
        "ask",
        "Web search is on for the Custom source, which ignores the switch; the :online model suffix works.",
    ),
    RuleMeta(
        "images",
        "Inline images and the model's vision support",
        "ask",
        "Inline images go to a model that cannot see them (Custom source), or never reach one that can.",
        needs_catalogue=True,
    ),
    RuleMeta(
        "context",
        "Context size does not match the model",
        "ask",
        "The context size is larger than the model accepts, or far smaller than it could be.",
        needs_catalogue=True,
    ),
    RuleMeta(
        "model.gone",
        "Selected model is not in NanoGPT's list",
        "ask",
        "The selected model is not in NanoGPT's list: removed by NanoGPT, or a mistyped id.",
        needs_catalogue=True,
    ),
    RuleMeta(
        "textgen.endpoint",
        "Text Completion address NanoGPT does not serve",
        "ask",
        "Text Completion points at a NanoGPT address without a completions route (subscription, "
        "v1legacy...).",
    ),
    RuleMeta(
        "textgen.context",
        "Text Completion context does not match the model",
        "ask",
        "Text Completion's context size is larger than the model accepts, or far smaller than it could be.",
        needs_catalogue=True,
    ),
    RuleMeta(
        "textgen.nanogpt",
        "Text Completion model not suited",
        "ask",
        "Text Completion points at NanoGPT with a model that does not work well there.",
        needs_catalogue=True,
    ),
    RuleMeta(
        "preset.ppp",
        "Preset would undo Prompt Post-Processing",
        "ask",
        "A Chat Completion preset would switch a NanoGPT connection back to a bad Prompt Post-Processing.",
    ),
    RuleMeta(
        "profile.ppp",
        "Connection profile would undo Prompt Post-Processing",
        "ask",
        "A Connection Manager profile would switch a NanoGPT connection back "
        "to a bad Prompt Post-Processing.",
    ),
    RuleMeta(
        "st.exposed",
        "SillyTavern is open to others and the server plugin is installed",
        "ask",
        "ST listens beyond this machine without a password, an IP whitelist or a host whitelist, so others "
        "could use the companion through the plugin.",
    ),
)
RULE_META: dict[str, RuleMeta] = {meta.id: meta for meta in _META}
RULE_ORDER: tuple[str, ...] = tuple(meta.id for meta in _META)


def make_finding(
    rule: str,
    *,
    explanation: str,
    severity: Severity,
    patch: tuple[PatchOp, ...] = (),
    target: TargetKind = "settings",
    preset: str | None = None,
    extra: str = "",
    details: dict[str, Any] | None = None,
    title: str | None = None,
    default_policy: Policy | None = None,
    raises_cost: bool = False,
) -> Finding:
    """A finding with a stable id: advice-only findings put what identifies the situation in ``extra``."""
    meta = RULE_META[rule]
    id_target = target if preset is None else f"{target}:{preset}"
    return Finding(
        id=finding_id(rule, id_target, patch, extra),
        rule=rule,
        title=title or meta.title,
        explanation=explanation,
        severity=severity,
        target=target,
        preset=preset,
        patch=patch,
        default_policy=default_policy or meta.default_policy,
        raises_cost=raises_cost,
        details=details or {},
    )
