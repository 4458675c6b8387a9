"""What the catalogue says a generation costs, and which of the account's counters it should move.

Both are guesses made when ST reports the generation; the readings that follow decide what it really cost.
Prices are USD per 1M tokens (``domain.Pricing``); a per-request price is added once per generation, so a
model priced that way stands out even when its token prices are zero.
"""

from __future__ import annotations

from nanogpt_companion.domain import AccountSnapshot, CatalogEntry, Tier
from nanogpt_companion.spend.records import Channel, Estimate, Generation

PAID_ENDPOINTS = frozenset({"paid"})  # NanoGPT's paid/v1 base never uses the subscription


def estimate(entry: CatalogEntry | None, generation: Generation) -> Estimate:
    """Tokens x the model's per-1M prices (+ its per-request price); quota = input tokens x multiplier.

    Unknown parts stay unknown: no price or no token count gives ``usd=None`` rather than a made-up 0.
    """
    if entry is None:
        return Estimate(usd=None, quota=None)
    pricing = entry.pricing
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    parts: list[float] = [pricing.per_request] if pricing.per_request is not None else []
    known = True
    for tokens, price in ((prompt, pricing.prompt), (completion, pricing.completion)):
        if tokens == 0 or price == 0:
            continue  # nothing on this side, or free: it adds nothing whatever the other value
        if tokens is None or price is None:
            known = False
        else:
            parts.append(tokens * price / 1_000_000)
    usd = sum(parts) if known else None
    quota: float | None = None
    if covered_by_subscription(entry) and prompt is not None:
        multiplier = entry.subscription.input_multiplier
        quota = prompt * (multiplier if multiplier is not None else 1.0)
    return Estimate(usd=usd, quota=quota, per_request=pricing.per_request is not None)


def covered_by_subscription(entry: CatalogEntry | None) -> bool:
    if entry is None:
        return False
    return entry.subscription.included is True or Tier.SUBSCRIPTION in entry.tiers


def expected_channel(
    entry: CatalogEntry | None, generation: Generation, account: AccountSnapshot | None
) -> Channel:
    """The quota for a subscriber's included model sent to a subscription-capable base without ST's
    pay-as-you-go override while NanoGPT still routes to the subscription; the balance otherwise."""
    sub = account.subscription if account is not None else None
    if sub is None or not sub.active or not covered_by_subscription(entry):
        return "usd"
    if generation.endpoint in PAID_ENDPOINTS or generation.billing == "paygo":
        return "usd"
    if sub.recommended_mode == "paygo":
        return "usd"
    return "quota"
