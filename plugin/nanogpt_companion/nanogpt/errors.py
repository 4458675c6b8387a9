"""Typed failures of the NanoGPT upstream.

Each class carries the ``code`` the HTTP API reports (docs/http-contract.md, "Errors") so the web layer can
map an exception to ``{"error": {"code", "message"}}`` without knowing upstream details. Messages are
written for the person looking at SillyTavern: what went wrong and what to do about it. They are built
only from status codes, sizes and our own words, never from request headers, so a key cannot end up in
one; upstream text that is quoted goes through :func:`redact` first.
"""

from __future__ import annotations

import re

from nanogpt_companion.nanogpt.redaction import KeyRedactor

# NanoGPT keys are ``sk-nano-<uuid>`` (management tokens ``sk-nano-mgmt-...``); legacy keys are a bare UUID.
_KEY_LIKE = re.compile(
    r"sk-[A-Za-z0-9_-]{6,}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_MAX_QUOTED = 200


def redact(text: str, secret: str | None = None) -> str:
    """Make upstream text safe to show: drop anything key-shaped and cap the length.

    NanoGPT's error messages have never been seen to echo a key, but they are third-party text that ends
    up in our responses and logs, so they are treated as untrusted.
    """
    if secret:
        text = KeyRedactor([secret]).text(text)
    text = _KEY_LIKE.sub("***", text)
    text = " ".join(text.split())
    if len(text) > _MAX_QUOTED:
        text = text[: _MAX_QUOTED - 1] + "…"
    return text


class NanoGPTError(Exception):
    """Base of every upstream failure. ``str(exc)`` is the user-facing message."""

    code: str = "upstream_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class NoKeyError(NanoGPTError):
    """A key is required (personalized list, balance, usage) and none is configured; nothing was sent."""

    code = "no_key"


class KeyRejectedError(NanoGPTError):
    """401/403. Never retried: NanoGPT counts authentication failures toward its abuse limits."""

    code = "key_rejected"


class InsufficientBalanceError(NanoGPTError):
    """402 from NanoGPT."""

    code = "insufficient_balance"


class RateLimitedError(NanoGPTError):
    """429. ``retry_after`` is seconds to wait (from ``Retry-After``), or None when NanoGPT gave no hint."""

    code = "rate_limited"

    def __init__(self, message: str, *, status: int | None = 429, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class UpstreamUnavailableError(NanoGPTError):
    """NanoGPT could not be reached or kept failing (5xx/408 after retries, resets, DNS, timeouts)."""

    code = "upstream_unavailable"


class MalformedResponseError(NanoGPTError):
    """NanoGPT answered, but the body is unusable: invalid/truncated JSON, wrong shape, or too large."""

    code = "upstream_malformed"
