"""dumps_st must be byte-for-byte JSON.stringify(value, null, 4): checked against node itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt_companion.sillytavern.stjson import dumps_st, format_number_js, loads_st
from tests.fixtures import ST_FIXTURES

FIXTURES = ST_FIXTURES
NODE = shutil.which("node") or "/usr/bin/node"

# Reads one JSON document per line (ASCII-escaped by Python, so any string survives transport) and
# answers with JSON.stringify(JSON.parse(line), null, 4), itself JSON-encoded onto one line.
NODE_SCRIPT = r"""
const rl = require('readline').createInterface({ input: process.stdin });
rl.on('line', (line) => {
    const out = JSON.stringify(JSON.parse(line), null, 4);
    process.stdout.write(JSON.stringify(out) + '\n');
});
"""


class NodeStringify:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [NODE, "-e", NODE_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def __call__(self, value: Any) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(value, ensure_ascii=True) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "node exited"
        result = json.loads(line)
        assert isinstance(result, str)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def node_stringify() -> Iterator[NodeStringify]:
    if not Path(NODE).exists():
        pytest.skip("node is not installed; the JSON.stringify comparison needs it")
    node = NodeStringify()
    yield node
    node.close()


# Files that ST wrote itself (browser save, POST /api/secrets/write) must round-trip with no allowance.
# The other fixtures are verbatim copies of hand-written files from ST's repository: they end with a
# newline and the seed spells one number "1.0", neither of which JSON.stringify ever produces (node
# agrees, see below). ST rewrites them in its own format on the first save; our patching keeps them as
# they are (tests/sillytavern/test_patching.py), only a whole-file dump normalises them.
HAND_WRITTEN_DELTAS: dict[str, list[tuple[str, str]]] = {
    "settings.seed.default-content.json": [('"temp_openai": 1.0,', '"temp_openai": 1,')],
    "openai-preset.Default.json": [],
}


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_st_fixture_round_trips_byte_for_byte(name: str, node_stringify: NodeStringify) -> None:
    raw = (FIXTURES / name).read_bytes()
    text = raw.decode("utf-8")
    value = loads_st(text)
    out = dumps_st(value)
    assert out == node_stringify(value)
    if name not in HAND_WRITTEN_DELTAS:
        assert out.encode("utf-8") == raw
        return
    expected = text.removesuffix("\n")
    for before, after in HAND_WRITTEN_DELTAS[name]:
        assert expected.count(before) == 1
        expected = expected.replace(before, after)
    assert out == expected


def test_fixtures_written_by_st_are_the_ones_expected() -> None:
    # Guards the allowance above from silently growing: only two files get it, and ST's own output
    # includes the real settings files.
    st_written = {p.name for p in FIXTURES.glob("*.json")} - set(HAND_WRITTEN_DELTAS)
    assert {"settings.full-after-first-save.json", "settings.nanogpt-source-selected.json"} <= st_written


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e-7, "1e-7"),
        (0.00001, "0.00001"),
        (0.000001, "0.000001"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (5.0, "5"),
        (-0.0, "0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123.456, "123.456"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (-1.5e-9, "-1.5e-9"),
        (float("inf"), "null"),
        (float("nan"), "null"),
    ],
)
def test_number_formatting_follows_ecmascript(value: float, expected: str) -> None:
    assert format_number_js(value) == expected


def test_specific_documents_match_node(node_stringify: NodeStringify) -> None:
    samples: list[Any] = [
        {},
        [],
        {"a": [], "b": {}, "c": [[]], "d": [{}]},
        {"b": 1, "2": 2, "1": 3, "01": 4, "4294967294": 5, "4294967295": 6, "-1": 7},
        {"s": 'quote" backslash\\ ctrl\x00\x01\x1f\x7f tab\t nl\n cr\r bs\b ff\f'},
        {"u": "é 日本 😀 \u2028 \u2029 \ufeff"},
        {"lone": "\ud800 x \udfff"},
        {"n": [0, -0.0, 1e-7, 1e21, 2**53, 2**53 + 1, 2**64, -(2**70), 10**400, 12345678901234567890]},
        [None, True, False, "x", 1.5],
    ]
    for value in samples:
        assert dumps_st(value) == node_stringify(value), value


def test_surrogate_pair_given_as_two_code_points_is_written_like_javascript(
    node_stringify: NodeStringify,
) -> None:
    # Two surrogate code points form one character in a UTF-16 JS string; dumps_st writes it raw too.
    value = {"pair": "\ud83d\ude00"}
    assert dumps_st(value) == node_stringify(value) == '{\n    "pair": "😀"\n}'


json_keys = st.one_of(
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=8),
    st.integers(min_value=0, max_value=2**33).map(str),
    st.sampled_from(["0", "01", "-0", "1.0", "4294967294", "4294967295", "__proto__"]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(json_keys, children, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_dumps_st_matches_node_json_stringify(node_stringify: NodeStringify, value: Any) -> None:
    assert dumps_st(value) == node_stringify(value)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_loads_st_reads_back_what_dumps_st_writes(value: Any) -> None:
    text = dumps_st(value)
    # Written once, the text is stable: ST re-saving what it read changes nothing.
    assert dumps_st(loads_st(text)) == text


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_loads_st_rejects_what_json_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        loads_st(text)
