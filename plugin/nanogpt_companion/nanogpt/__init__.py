"""NanoGPT upstream: typed async client, lenient payload schemas and typed errors.

Nothing here knows about users, caches or SillyTavern; ``catalog`` and ``account`` build on it.
"""

from nanogpt_companion.nanogpt.client import DEFAULT_BASE_URL, TIER_PATHS, ModelListResult, NanoGPTClient
from nanogpt_companion.nanogpt.errors import (
    InsufficientBalanceError,
    KeyRejectedError,
    MalformedResponseError,
    NanoGPTError,
    NoKeyError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from nanogpt_companion.nanogpt.schemas import (
    ParsedModelList,
    SkippedEntry,
    UpstreamModel,
    parse_balance,
    parse_model_list,
    parse_subscription_usage,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "TIER_PATHS",
    "InsufficientBalanceError",
    "KeyRejectedError",
    "MalformedResponseError",
    "ModelListResult",
    "NanoGPTClient",
    "NanoGPTError",
    "NoKeyError",
    "ParsedModelList",
    "RateLimitedError",
    "SkippedEntry",
    "UpstreamModel",
    "UpstreamUnavailableError",
    "parse_balance",
    "parse_model_list",
    "parse_subscription_usage",
]
