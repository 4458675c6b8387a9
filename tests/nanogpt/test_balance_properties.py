"""Properties of the balance parser (issue 5 item 2).

``check-balance`` is polled for weeks; whatever NanoGPT (or a proxy in front of it) sends, the poller must
get a ``Balance`` or a ``MalformedResponseError`` it knows how to show, never another exception that would
kill the poll loop. And because NanoGPT sends amounts as decimal strings, a string amount must become the
very same float as the number it spells, or balances drift by a rounding step between polls.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nanogpt_companion.domain import Balance
from nanogpt_companion.nanogpt import MalformedResponseError, parse_balance

FIELDS = ("usd_balance", "nano_balance")

# Every JSON value orjson can produce, nested a little: the fields may hold any of them.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
# The two balance fields, maybe absent, plus unrelated keys NanoGPT might add.
payloads = st.fixed_dictionaries(
    {},
    optional={"usd_balance": json_values, "nano_balance": json_values, "nanoDepositAddress": json_values},
).flatmap(
    lambda known: st.dictionaries(st.text(max_size=12), json_values, max_size=3).map(
        lambda extra: {**extra, **known}
    )
)


def outcome(raw: bytes) -> Balance | MalformedResponseError:
    """The parser's answer, with the one exception it may raise turned into a value."""
    try:
        return parse_balance(raw)
    except MalformedResponseError as exc:
        return exc


def expected_amount(value: Any) -> float | None:
    """What the field should become: a finite JSON number or numeric string, else unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_any_json_value_in_any_field_is_a_balance_or_a_clear_error(payload: dict[str, Any]) -> None:
    result = outcome(orjson.dumps(payload))
    if not any(name in payload for name in FIELDS):
        assert isinstance(result, MalformedResponseError)
        assert "usd_balance" in str(result)
        return
    # With either field present the answer is always usable; a bad value is only "unknown" (None).
    assert isinstance(result, Balance)
    assert result.usd == expected_amount(payload.get("usd_balance"))
    assert result.xno == expected_amount(payload.get("nano_balance"))
    for amount in (result.usd, result.xno):
        assert amount is None or (type(amount) is float and math.isfinite(amount))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xef\xbb\xbf{}")  # a UTF-8 BOM
@example(b'{"usd_balance": "1", ')  # cut off mid-object
@example(b'{"usd_balance": 1e400}')  # a number no double can hold
@example(b'{"usd_balance": "\\ud800"}')  # a lone surrogate escape
@example(b'{"usd_balance": 1}\x00')
def test_arbitrary_bytes_are_a_balance_or_a_clear_error(raw: bytes) -> None:
    result = outcome(raw)
    assert isinstance(result, Balance | MalformedResponseError)
    if isinstance(result, MalformedResponseError):
        # The message is for a person: it says what was wrong, and never echoes the body back.
        assert "NanoGPT" in str(result)


@settings(max_examples=300, deadline=None)
@given(
    usd=st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-(10**12), max_value=10**12),
    xno=st.floats(allow_nan=False, allow_infinity=False),
    pad=st.sampled_from(["", " ", "\t", " \n"]),
)
@example(usd=Decimal("129.46956147"), xno=26.71801147, pad="")  # the real fixture's values
@example(usd=Decimal("0.00000001"), xno=1e-7, pad="")
@example(usd=Decimal("-0"), xno=-0.0, pad="")
def test_string_numbers_parse_exactly(usd: Decimal, xno: float, pad: str) -> None:
    # NanoGPT's own format: fixed-point decimal strings (``"129.46956147"``), maybe padded; and any float
    # written out by repr (shortest round-trip form, exponents included) must come back bit for bit.
    raw = orjson.dumps({"usd_balance": f"{pad}{usd}{pad}", "nano_balance": repr(xno)})
    balance = parse_balance(raw)
    assert balance.usd == float(usd)  # correctly rounded decimal -> double, the same as a JSON number
    assert balance.xno is not None
    assert balance.xno.hex() == xno.hex()  # exact, sign of zero included


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
)
def test_a_string_amount_equals_the_same_amount_sent_as_a_number(number: float) -> None:
    as_number = parse_balance(orjson.dumps({"usd_balance": number}))
    as_string = parse_balance(orjson.dumps({"usd_balance": str(number)}))
    assert as_number.usd == as_string.usd == float(number)
    assert as_number.xno is None and as_string.xno is None
