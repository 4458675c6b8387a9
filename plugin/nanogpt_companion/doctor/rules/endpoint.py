"""NanoGPT address rules: repair hand-typed URLs, and pick the address that fits the account and ST."""

from __future__ import annotations

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding, PatchOp
from nanogpt_companion.doctor.rules.common import as_mapping, cc_connection, oai, oai_prefix
from nanogpt_companion.doctor.rules.meta import make_finding
from nanogpt_companion.nanogpt.endpoints import (
    EndpointId,
    get_endpoint,
    parse_nanogpt_url,
    recommend_endpoint,
)


def check_endpoint_url(ctx: DoctorContext) -> list[Finding]:
    findings: list[Finding] = []
    view = oai(ctx.settings)
    cc = parse_nanogpt_url(view.get("custom_url"))
    if cc is not None and not cc.ok and cc.endpoint_id is not None:
        findings.append(
            make_finding(
                "endpoint.url",
                explanation=(
                    f"The Custom (OpenAI-compatible) endpoint points at NanoGPT, but {cc.describe()}. "
                    f"SillyTavern adds /models and /chat/completions itself, so the address must be exactly "
                    f"{cc.normalised} for requests to reach NanoGPT."
                ),
                severity="info" if cc.only_cosmetic else "error",
                patch=(
                    PatchOp(
                        path=(*oai_prefix(ctx.settings), "custom_url"), value=cc.normalised, old=cc.original
                    ),
                ),
                details={"field": "custom_url", "problems": list(cc.problems), "endpoint": cc.endpoint_id},
            )
        )
    textgen = as_mapping(ctx.settings.get("textgenerationwebui_settings"))
    server_urls = as_mapping(textgen.get("server_urls")) if textgen else None
    tc = parse_nanogpt_url(server_urls.get("generic"), for_text_completion=True) if server_urls else None
    if tc is not None and not tc.ok and tc.endpoint_id is not None:
        findings.append(
            make_finding(
                "endpoint.url",
                explanation=(
                    "The Text Completion server URL points at NanoGPT, but "
                    f"{tc.describe()}. SillyTavern adds "
                    f"/v1/completions itself, so the address should be {tc.normalised}."
                ),
                severity="info" if tc.only_cosmetic else "error",
                patch=(
                    PatchOp(
                        path=("textgenerationwebui_settings", "server_urls", "generic"),
                        value=tc.normalised,
                        old=tc.original,
                    ),
                ),
                details={
                    "field": "server_urls.generic",
                    "problems": list(tc.problems),
                    "endpoint": tc.endpoint_id,
                },
            )
        )
    return findings


def check_endpoint_tier(ctx: DoctorContext) -> list[Finding]:
    conn = cc_connection(ctx)
    # Only the Custom source lets the user choose the address; the built-in source is fixed to /api/v1.
    if conn is None or conn.url is None or not conn.url.ok:
        return []  # a malformed URL is endpoint.url's job first
    current = conn.url.endpoint_id
    suggested, reason = recommend_endpoint(ctx.account)
    subscription = ctx.account.subscription if ctx.account is not None else None
    target: EndpointId | None = None
    if current == "v1" and suggested == "subscription":
        target = suggested
    elif (
        current == "subscription"
        and ctx.account is not None
        and ctx.account.key_status == "ok"
        and (subscription is None or not subscription.active)
    ):
        # Only a known non-subscriber: an unknown account must not be pushed off the subscription address.
        target = "v1"
        reason = (
            "Your NanoGPT account has no active subscription, so the subscription address rejects "
            "requests; the standard address bills them from your balance."
        )
    if target is None or target == current:
        return []
    new_url = get_endpoint(target).url_on(conn.url.host)
    return [
        make_finding(
            "endpoint.tier",
            explanation=(
                f"Your Custom connection uses {conn.url.normalised}. {reason} "
                f"Suggested address: {new_url} ({get_endpoint(target).title})."
            ),
            severity="warning" if current == "subscription" else "info",
            patch=(
                PatchOp(path=(*oai_prefix(ctx.settings), "custom_url"), value=new_url, old=conn.url.original),
            ),
            details={"current": current, "suggested": target},
        )
    ]
