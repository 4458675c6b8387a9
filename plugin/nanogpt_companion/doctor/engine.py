"""Runs every rule in a fixed order and lists the rules for the API.

Pure: the same context always yields the same findings, ids and order, which the extension relies on to
match findings between scans and the service relies on to remember fixes a user reverted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, Policy
from nanogpt_companion.doctor.rules import endpoint, exposure, features, keys, models, ppp, providers, textgen
from nanogpt_companion.doctor.rules.meta import RULE_META, RULE_ORDER

logger = logging.getLogger(__name__)

RuleCheck = Callable[[DoctorContext], list[Finding]]


@dataclass(frozen=True)
class RuleInfo:
    id: str
    title: str
    default_policy: Policy
    summary: str
    check: RuleCheck


_CHECKS: dict[str, RuleCheck] = {
    "ppp.nanogpt": ppp.check_ppp_nanogpt,
    "ppp.tools": ppp.check_ppp_tools,
    "endpoint.url": endpoint.check_endpoint_url,
    "endpoint.tier": endpoint.check_endpoint_tier,
    "reasoning": features.check_reasoning,
    "web_search": features.check_web_search,
    "images": features.check_images,
    "context": features.check_context,
    "model.gone": models.check_model_gone,
    "textgen.endpoint": textgen.check_textgen_endpoint,
    "textgen.context": textgen.check_textgen_context,
    "textgen.nanogpt": textgen.check_textgen_nanogpt,
    "preset.ppp": ppp.check_preset_ppp,
    "profile.ppp": ppp.check_profile_ppp,
    "st.exposed": exposure.check_st_exposure,
    "provider.choice": providers.check_provider_choice,
    "provider.billing": providers.check_provider_billing,
    "image.key": keys.check_image_key,
    "keys.slots": keys.check_key_slots,
}

RULES: tuple[RuleInfo, ...] = tuple(
    RuleInfo(
        id=rule_id,
        title=RULE_META[rule_id].title,
        default_policy=RULE_META[rule_id].default_policy,
        summary=RULE_META[rule_id].summary,
        check=_CHECKS[rule_id],
    )
    for rule_id in RULE_ORDER
)
RULE_IDS: tuple[str, ...] = RULE_ORDER


def diagnose(ctx: DoctorContext, *, rules: tuple[RuleInfo, ...] = RULES) -> list[Finding]:
    """All findings, rule by rule in ``RULES`` order.

    A rule that raises on an odd hand-edited file is logged and skipped, so one bad key never hides the
    other rules' findings (the rules are written to tolerate bad types; this is the backstop).
    """
    findings: list[Finding] = []
    for rule in rules:
        try:
            findings.extend(rule.check(ctx))
        except Exception:
            logger.exception("doctor rule %s failed; skipping it for this scan", rule.id)
    return findings
