"""Provider selection for the built-in NanoGPT source (ST 1.18.0+): a choice that fits the model, cost.

ST 1.18.0 keeps the choice in ``oai_settings.nanogpt_provider`` (public/scripts/openai.js L332, default ""
= Auto, L448) and sends it as ``X-Provider`` with every request (src/endpoints/backends/chat-completions.js
L2385-2386); ``nanogpt_payg_override`` sends ``X-Billing-Mode: paygo`` (L2388-2390). Its provider list is
hard-coded (public/scripts/textgen-models.js ``NANOGPT_PROVIDERS`` L116ff) and only greyed out per model, so
a choice can outlive the model it was made for (ST issue #5615). NanoGPT's own answer per model
(``GET /api/models/{id}/providers``) is the truth these rules compare against. Versions before 1.18.0 have
neither key, and the rules stay silent there: nothing is ever written to them.

Billing (NanoGPT docs billing-override.mdx, provider-selection.mdx): an explicit provider or the
pay-as-you-go override bills a subscription-included model from the balance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor.rules.common import (
    as_bool,
    as_str,
    cc_connection,
    connection_of,
    lookup_model,
    oai,
    oai_prefix,
    strip_request_suffixes,
)
from nanogpt_companion.doctor.rules.meta import make_finding
from nanogpt_companion.domain import ModelProviders, ProviderOption

PROVIDER_KEY = "nanogpt_provider"
PAYG_KEY = "nanogpt_payg_override"


def provider_pin(model_id: str, known_providers: Mapping[str, str]) -> str | None:
    """The provider a ``model:provider`` id pins (nanogpt-api.md 3.8, e.g. ``:cerebras``), if any."""
    stripped = strip_request_suffixes(model_id)
    if ":" not in stripped:
        return None
    tail = stripped.rsplit(":", 1)[1].strip().lower()
    return tail if tail in {pid.lower() for pid in known_providers} else None


def providers_lookup_id(model_id: str, known_providers: Mapping[str, str]) -> str:
    """The id to ask NanoGPT's provider endpoint about: request suffixes and a provider pin removed."""
    stripped = strip_request_suffixes(model_id.strip())
    pin = provider_pin(stripped, known_providers)
    return stripped[: -(len(pin) + 1)] if pin else stripped


def _label(option: ProviderOption | None, pid: str, names: Mapping[str, str]) -> str:
    if option is not None and option.label:
        return option.label
    return names.get(pid) or names.get(pid.lower()) or pid


def _choices(info: ModelProviders, names: Mapping[str, str]) -> list[dict[str, object]]:
    return [
        {
            "id": p.id,
            "label": _label(p, p.id, names),
            "prompt": p.prompt,
            "completion": p.completion,
        }
        for p in sorted(info.available, key=lambda p: (p.prompt is None, p.prompt or 0.0, p.id))
    ]


def chosen_provider_model(settings: Mapping[str, Any]) -> str | None:
    """The selected model when the built-in NanoGPT source is active with a provider chosen, else None:
    the one case where the doctor needs NanoGPT's provider info."""
    view = oai(settings)
    conn = connection_of(view) if settings.get("main_api") == "openai" else None
    if conn is None or conn.kind != "nanogpt" or not conn.model:
        return None
    return conn.model if (as_str(view.get(PROVIDER_KEY)) or "").strip() else None


def _selected(ctx: DoctorContext) -> tuple[str, str, str] | None:
    """(model, chosen provider, lookup id) when the built-in NanoGPT source is active on an ST that has
    provider selection; None otherwise."""
    conn = cc_connection(ctx)
    view = oai(ctx.settings)
    if conn is None or conn.kind != "nanogpt" or not conn.model or PROVIDER_KEY not in view:
        return None
    chosen = (as_str(view.get(PROVIDER_KEY)) or "").strip()
    return conn.model, chosen, providers_lookup_id(conn.model, _known(ctx))


def _known(ctx: DoctorContext) -> dict[str, str]:
    known = dict(ctx.provider_names)
    for info in ctx.providers.values():
        for option in info.providers:
            known.setdefault(option.id, option.label or option.id)
    return known


def check_provider_choice(ctx: DoctorContext) -> list[Finding]:
    selected = _selected(ctx)
    if selected is None:
        return []
    model, chosen, lookup = selected
    if not chosen:
        return []
    names = _known(ctx)
    clear = (PatchOp(path=(*oai_prefix(ctx.settings), PROVIDER_KEY), value="", old=chosen),)
    chosen_label = _label(None, chosen, names)
    pin = provider_pin(model, names)
    if pin is not None and pin != chosen.lower():
        return [
            make_finding(
                "provider.choice",
                explanation=(
                    f"The model id {model} pins the provider {_label(None, pin, names)}, but the NanoGPT "
                    f"provider chosen in SillyTavern is {chosen_label}. SillyTavern sends both (the pin in "
                    "the model id, the choice as X-Provider), and they contradict each other. Clearing the "
                    "choice (Auto) keeps the pin."
                ),
                severity="warning",
                patch=clear,
                extra=f"pin|{model}|{chosen}",
                details={"model": model, "provider": chosen, "pin": pin, "kind": "pin_conflict"},
            )
        ]
    info = ctx.providers.get(lookup)
    if info is None or not info.known:
        return []  # unknown: no finding from a guess (model.gone covers ids NanoGPT does not know)
    choices = _choices(info, names)
    details: dict[str, object] = {"model": model, "provider": chosen, "choices": choices}
    option = info.provider(chosen)
    if not info.supports_selection:
        kind, severity = "no_selection", "warning"
        problem = (
            f"NanoGPT does not support choosing a provider for {model}, but SillyTavern is set to send "
            f"{chosen_label} with every request. NanoGPT picks the provider for this model itself; clear the "
            "choice (Auto) so requests do not ask for one."
        )
    elif option is None:
        kind, severity = "not_offered", "error"
        problem = (
            f"NanoGPT does not offer {model} through {chosen_label}, the provider chosen in SillyTavern. "
            "SillyTavern's provider list is fixed and can be wrong for a model (SillyTavern issue #5615)."
        )
    elif not option.available:
        kind, severity = "unavailable", "error"
        problem = f"{chosen_label} is currently unavailable for {model} at NanoGPT."
    else:
        return []
    if kind != "no_selection":
        problem += (
            " SillyTavern sends the choice with every request, and NanoGPT then answers 404 (the warning "
            "sign beside SillyTavern's Model Providers says as much)."
        )
        offered = ", ".join(str(c["label"]) for c in choices[:6])
        problem += (
            f" Providers available for it now: {offered}." if offered else " No provider is available now."
        )
        problem += " Pick one of them, or clear the choice (Auto) and NanoGPT picks one."
    details["kind"] = kind
    return [
        make_finding(
            "provider.choice",
            explanation=problem,
            severity=severity,  # type: ignore[arg-type]  # one of the Severity literals above
            patch=clear,
            extra=f"{kind}|{model}|{chosen}",
            details=details,
        )
    ]


def check_provider_billing(ctx: DoctorContext) -> list[Finding]:
    selected = _selected(ctx)
    account = ctx.account
    if selected is None or account is None or account.subscription is None:
        return []
    if not account.subscription.active:
        return []
    model, chosen, _lookup = selected
    entry = lookup_model(ctx.catalogue, model)
    if entry is None or entry.subscription.included is not True:
        return []
    view = oai(ctx.settings)
    payg = as_bool(view.get(PAYG_KEY)) is True
    if not chosen and not payg:
        return []
    names = _known(ctx)
    causes = []
    patch: list[PatchOp] = []
    if chosen:
        causes.append(f"the chosen provider ({_label(None, chosen, names)})")
        patch.append(PatchOp(path=(*oai_prefix(ctx.settings), PROVIDER_KEY), value="", old=chosen))
    if payg:
        causes.append('"Use pay-as-you-go billing"')
        patch.append(PatchOp(path=(*oai_prefix(ctx.settings), PAYG_KEY), value=False, old=True))
    return [
        make_finding(
            "provider.billing",
            explanation=(
                f"{model} is included in your NanoGPT subscription, but "
                + " and ".join(causes)
                + " makes NanoGPT bill every request for it as pay-as-you-go, from your balance "
                "(NanoGPT's billing-override rules). If that is not what you want, clear "
                + ("them" if len(causes) > 1 else "it")
                + " so the subscription covers the model."
            ),
            severity="info",
            patch=tuple(patch),
            extra=f"{model}|{chosen}|{payg}",
            details={"model": model, "provider": chosen or None, "payg_override": payg},
        )
    ]
