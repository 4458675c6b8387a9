"""Which NanoGPT key a user's requests use, carried in a type that cannot leak it by accident.

Order (DESIGN.md): the configured key (``NANOGPT_API_KEY`` / config file, for single-user setups), then
the user's ST ``secrets.json``. The value is only ever read through ``reveal()`` at the point where an
upstream request is built; ``repr``/``str`` and the fingerprint (used for cache keys and logs) never
contain it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

KeySource = Literal["config", "sillytavern", "none"]


@dataclass(frozen=True)
class ResolvedKey:
    _value: str | None = field(repr=False)
    source: KeySource = "none"

    @classmethod
    def none(cls) -> ResolvedKey:
        return cls(None, "none")

    @property
    def present(self) -> bool:
        return bool(self._value)

    def reveal(self) -> str | None:
        return self._value or None

    @property
    def fingerprint(self) -> str:
        """Stable, non-reversible id of the key: equal keys share caches, different keys never do."""
        if not self._value:
            return "anonymous"
        return "k" + hashlib.sha256(self._value.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"<NanoGPT key {self.fingerprint} from {self.source}>"
