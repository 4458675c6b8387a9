"""Keep API keys out of everything NanoGPT sends back, before it is stored, served or logged.

Why every string field and not only error messages: the upstream is third-party text. A model id, a
name or a usage field that echoes the key sent with the request would otherwise reach ``/api/catalog``,
the refresh diff, ``/api/account``, the event stream and the SQLite snapshot. Why runs of 12 characters
and not only the whole key: a key split by a space, or cut short, still gives most of it away; twelve
characters of a key are never a coincidence in a model catalogue (NanoGPT keys carry a UUID).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel

MIN_RUN = 12
MASK = "***"
_PROBE = MIN_RUN // 2

T = TypeVar("T")


class KeyRedactor:
    """Replaces every run of ``MIN_RUN`` or more characters of any of the given keys with ``***``.

    Fast when there is nothing to find (the normal case): each string is first probed for the key's
    aligned 6-character chunks with ``str.__contains__``; every 12-character run of a key contains one
    of them, so a string without any cannot hold a run.
    """

    def __init__(self, keys: Iterable[str | None]) -> None:
        self._keys = sorted({k for k in keys if k}, key=len, reverse=True)
        self._short = [k for k in self._keys if len(k) < MIN_RUN]  # never seen in practice: whole key only
        self._grams = {
            k[i : i + MIN_RUN] for k in self._keys if len(k) >= MIN_RUN for i in range(len(k) - MIN_RUN + 1)
        }
        self._probes = tuple(
            {
                k[i : i + _PROBE]
                for k in self._keys
                if len(k) >= MIN_RUN
                for i in range(0, len(k) - _PROBE + 1, _PROBE)
            }
        )

    def __bool__(self) -> bool:
        return bool(self._keys)

    def found_in(self, data: bytes) -> bool:
        """Whether ``text`` would mask anything in ``data``, JSON as orjson writes it (UTF-8, no ``\\u``
        escapes for the ASCII a key is made of): byte searches only, fast on megabytes. A key JSON would
        escape (quotes, backslashes, control or non-ASCII characters) is taken as found: never a wrong no."""
        if any(not k.isascii() or not k.isprintable() or '"' in k or "\\" in k for k in self._keys):
            return True
        short = (k.encode() for k in self._short)
        if any(k in data for k in short):
            return True
        if not any(p.encode() in data for p in self._probes):
            return False
        return any(g.encode() in data for g in self._grams)

    def text(self, text: str) -> str:
        """``text`` with every run of a key masked; ``text`` itself (the same object) when it holds none."""
        if not self._keys or not (
            any(probe in text for probe in self._probes) or any(k in text for k in self._short)
        ):
            return text
        masked = bytearray(len(text))
        for key in self._short:
            start = text.find(key)
            while start != -1:
                masked[start : start + len(key)] = b"\x01" * len(key)
                start = text.find(key, start + 1)
        for i in range(len(text) - MIN_RUN + 1):
            if text[i : i + MIN_RUN] in self._grams:
                masked[i : i + MIN_RUN] = b"\x01" * MIN_RUN
        if not any(masked):
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if masked[i]:
                while i < len(text) and masked[i]:
                    i += 1
                out.append(MASK)
            else:
                j = masked.find(b"\x01", i)
                j = len(text) if j == -1 else j
                out.append(text[i:j])
                i = j
        return "".join(out)

    def value(self, value: T) -> T:
        """``value`` with every string in it (dict keys too, pydantic records included) redacted.

        Returns the very same object when nothing needed redacting, so the clean case allocates nothing.
        """
        if not self._keys:
            return value
        return self._walk(value)  # type: ignore[no-any-return]

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, BaseModel):
            changed = {}
            for name in type(value).model_fields:
                old = getattr(value, name)
                new = self._walk(old)
                if new is not old:
                    changed[name] = new
            if not changed:
                return value
            # Not model_copy(update=...): parsed upstream models share one frozen fields-set (memory),
            # which update= would try to extend. A shallow copy with the redacted values set is the same.
            copied = value.model_copy()
            for name, new_value in changed.items():
                object.__setattr__(copied, name, new_value)
            return copied
        if isinstance(value, dict):
            items = [(self._walk(k), self._walk(v)) for k, v in value.items()]
            if all(nk is k and nv is v for (nk, nv), (k, v) in zip(items, value.items(), strict=True)):
                return value
            return dict(items)
        if isinstance(value, list | tuple):
            walked = [self._walk(v) for v in value]
            if all(n is o for n, o in zip(walked, value, strict=True)):
                return value
            return type(value)(walked)
        return value
