"""JSON exactly as SillyTavern writes it: ``JSON.stringify(value, null, 4)``.

ST rewrites ``settings.json``, presets and ``secrets.json`` from the browser's in-memory state, so any text
we write must be indistinguishable from ST's own output; otherwise every fix would show up as a
whole-file diff (in backups, in git-managed data dirs) and ST's next save would "change" it back.
Python's ``json.dumps`` differs in three places that matter here: number formatting (``1e-07`` vs
``1e-7``, ``5.0`` vs ``5``), the order of integer-like object keys (JavaScript lists array-index keys
first, ascending), and lone surrogates (JavaScript escapes them since ES2019).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

INDENT = "    "

# JavaScript numbers are IEEE doubles: integers beyond 2**53 are not exact there, so they are printed
# the way JS would print the double it parsed.
_MAX_SAFE_INT = 2**53
# Property keys that JavaScript treats as array indices (canonical decimal, value < 2**32 - 1) are
# enumerated first, in ascending numeric order, whatever order they were inserted in.
_MAX_ARRAY_INDEX = 2**32 - 2
_INDEX_KEY = re.compile(r"0|[1-9][0-9]{0,9}")

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
# A surrogate pair spelled as two code points is a valid pair to JavaScript (strings are UTF-16), so it
# is matched first and written raw; only unpaired surrogates are escaped.
_NEEDS_ESCAPE = re.compile('[\ud800-\udbff][\udc00-\udfff]|[\x00-\x1f"\\\\\ud800-\udfff]')


def _escape_char(match: re.Match[str]) -> str:
    s = match.group()
    if len(s) == 2:
        high, low = ord(s[0]), ord(s[1])
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    mapped = _ESCAPES.get(s)
    if mapped is not None:
        return mapped
    return f"\\u{ord(s):04x}"


def quote_st(s: str) -> str:
    """A JSON string literal as ``JSON.stringify`` writes it (non-ASCII, U+2028/2029 and DEL stay raw)."""
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, s) + '"'


def format_number_js(value: float) -> str:
    """ECMAScript ``Number::toString`` for a double, as used by ``JSON.stringify``.

    Python's ``repr`` already yields the shortest round-trip digits, the same digit string JavaScript
    picks; only the placement of the decimal point / exponent differs, which is redone here by the
    rules of ECMA-262 (Number::toString, radix 10).
    """
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"  # also -0: JSON.stringify(-0) === "0"
    sign = "-" if value < 0 else ""
    r = repr(abs(value))
    mantissa, _, exp_text = r.partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    stripped = all_digits.lstrip("0")
    # ECMA-262's n: the value is 0.<digits> * 10**n.
    n = len(int_part) + exponent - (len(all_digits) - len(stripped))
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        e_text = f"e+{e}" if e >= 0 else f"e-{-e}"
        out = digits + e_text if k == 1 else digits[0] + "." + digits[1:] + e_text
    return sign + out


def format_int_js(value: int) -> str:
    if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
        return str(value)
    try:
        return format_number_js(float(value))
    except OverflowError:
        return "null"  # beyond the double range JavaScript has Infinity, which JSON.stringify writes as null


def _is_index_key(key: str) -> bool:
    return _INDEX_KEY.fullmatch(key) is not None and int(key) <= _MAX_ARRAY_INDEX


def js_key_order(obj: Mapping[str, Any]) -> list[str]:
    """Keys in the order a JavaScript object built from ``obj`` enumerates them."""
    keys = list(obj.keys())
    index_keys = [k for k in keys if _is_index_key(k)]
    if not index_keys:
        return keys
    index_keys.sort(key=int)
    return index_keys + [k for k in keys if not _is_index_key(k)]


def _emit(value: Any, indent: str, out: list[str], unit: str = INDENT) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(quote_st(value))
    elif isinstance(value, int):
        out.append(format_int_js(value))
    elif isinstance(value, float):
        out.append(format_number_js(value))
    elif isinstance(value, Mapping):
        if not value:
            out.append("{}")
            return
        inner = indent + unit
        out.append("{\n")
        first = True
        for key in js_key_order(value):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be str, not {type(key).__name__}")
            if not first:
                out.append(",\n")
            first = False
            out.append(inner)
            out.append(quote_st(key))
            out.append(": ")
            _emit(value[key], inner, out, unit)
        out.append("\n")
        out.append(indent)
        out.append("}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = indent + unit
        out.append("[\n")
        for i, item in enumerate(value):
            if i:
                out.append(",\n")
            out.append(inner)
            _emit(item, inner, out, unit)
        out.append("\n")
        out.append(indent)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_st(value: Any, indent: str = "", unit: str = INDENT) -> str:
    """``JSON.stringify(value, null, 4)``.

    ``indent`` is the indentation of the line the value starts on, so a value spliced into a file at
    some depth is laid out exactly as ST would lay it out there; ``unit`` lets a splice follow a file
    that a human re-indented.
    """
    out: list[str] = []
    _emit(value, indent, out, unit)
    return "".join(out)


def _reject_constant(name: str) -> Any:
    # JSON.parse rejects NaN/Infinity; accepting them would let us read files ST itself cannot load.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_st(text: str) -> Any:
    """Parse like ``JSON.parse``: strict JSON, last duplicate key wins (at its first position)."""
    return _DECODER.decode(text)


def loads_fast(data: str | bytes) -> Any:
    """``loads_st`` at C speed for the common case (orjson is several times faster on multi-MB files).

    orjson agrees with ``JSON.parse`` on what it accepts (duplicate keys: last wins at the first
    position; integers past 64 bits become doubles, as in JavaScript). Anything it refuses (a lone
    surrogate escape, invalid JSON) goes through ``loads_st``, which either accepts it the way
    ``JSON.parse`` would or raises the detailed error callers show to users.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return loads_st(data.decode("utf-8") if isinstance(data, bytes) else data)


def decoder() -> json.JSONDecoder:
    """The decoder ``loads_st`` uses, for callers that scan values in place (patching)."""
    return _DECODER


def dumps_st_compact(value: Any) -> str:
    """``JSON.stringify(value)`` (no indentation), for splicing into a file that is written minified."""
    if isinstance(value, Mapping):
        members = (f"{quote_st(k)}:{dumps_st_compact(value[k])}" for k in js_key_order(value))
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_st_compact(v) for v in value) + "]"
    return dumps_st(value)


def _js_number(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def js_equal(a: Any, b: Any) -> bool:
    """Equality as JavaScript sees parsed JSON: every number is a double, so ``44990178728930740`` (read
    back as a Python int) equals the float it was written from. Fast path: plain Python equality."""
    if a == b:
        return True
    a_num = isinstance(a, int | float) and not isinstance(a, bool)
    b_num = isinstance(b, int | float) and not isinstance(b, bool)
    if a_num and b_num:
        return _js_number(a) == _js_number(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(js_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(js_equal(x, y) for x, y in zip(a, b, strict=True))
    return False
