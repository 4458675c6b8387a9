"""The SillyTavern versions the suite runs against: the one place to add a release."""

from __future__ import annotations

# Oldest supported (the version the NanoGPT guide was last tested on), the release that added NanoGPT
# credits and provider selection to ST's core, and the newest release.
OLDEST = "1.13.5"
CREDITS_IN_CORE = "1.18.0"
NEWEST = "1.19.0"
ST_VERSIONS: tuple[str, ...] = (OLDEST, CREDITS_IN_CORE, NEWEST)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
