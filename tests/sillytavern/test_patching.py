"""Patching changes the targeted values and nothing else, in any layout, and checks itself."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import PatchError
from nanogpt_companion.sillytavern.patching import (
    OldValue,
    PatchEdit,
    apply_patch_text,
    expected_data,
    old_values,
    undo_edits,
    write_patched,
)
from nanogpt_companion.sillytavern.stjson import dumps_st, js_equal, loads_st
from tests.fixtures import ST_FIXTURES

FIXTURES = ST_FIXTURES
PPP = ("oai_settings", "custom_prompt_post_processing")


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def changed_region(old: str, new: str) -> tuple[int, int, int]:
    """(prefix length, old end, new end): old[p:old_end] was replaced by new[p:new_end]."""
    p = 0
    limit = min(len(old), len(new))
    while p < limit and old[p] == new[p]:
        p += 1
    s = 0
    while s < limit - p and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    return p, len(old) - s, len(new) - s


def test_replacing_ppp_in_a_real_settings_file_changes_only_that_value() -> None:
    old = fixture_text("settings.nanogpt-source-selected.json")
    new = apply_patch_text(old, [PatchEdit(PPP, "merge")])
    assert new == old.replace(
        '"custom_prompt_post_processing": "single"', '"custom_prompt_post_processing": "merge"'
    )
    assert new != old
    # And it is exactly what ST would write for the patched object.
    expected = loads_st(old)
    expected["oai_settings"]["custom_prompt_post_processing"] = "merge"
    assert new == dumps_st(expected)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("firstRun",), True),  # depth 1, first key
        (("main_api",), "openai"),
        (("oai_settings", "temp_openai"), 0.7),  # depth 2
        (("power_user", "reasoning", "prefix"), "<thinking>"),  # depth 3
        (("extension_settings", "connectionManager", "profiles"), [{"id": "p1", "name": "Nano"}]),
        (("oai_settings", "openai_max_context"), 1e-7),
        (("selected_proxy",), {"name": "None", "url": "", "password": ""}),  # last top-level key
    ],
)
def test_replace_at_several_depths_is_what_st_writes(path: tuple[str, ...], value: Any) -> None:
    old = fixture_text("settings.full-after-first-save.json")
    new = apply_patch_text(old, [PatchEdit(path, value)])
    assert new == dumps_st(expected_data(loads_st(old), [PatchEdit(path, value)]))
    p, old_end, new_end = changed_region(old, new)
    # Everything before and after the edited value is the same text.
    assert old[:p] == new[:p] and old[old_end:] == new[new_end:]
    assert loads_st(new[:p] + new[p:new_end] + old[old_end:]) == loads_st(new)


def test_seed_file_keeps_its_hand_written_bytes_outside_the_patch() -> None:
    # The seed says "1.0" and ends with a newline: a whole-file rewrite would change both.
    old = fixture_text("settings.seed.default-content.json")
    new = apply_patch_text(old, [PatchEdit(("main_api",), "openai"), PatchEdit(PPP, "merge")])
    assert '"temp_openai": 1.0,' in new and new.endswith("}\n")
    assert new.count('"main_api": "openai"') == 1
    assert (
        new.replace('"main_api": "openai"', '"main_api": "koboldhorde"').replace(
            ',\n        "custom_prompt_post_processing": "merge"', ""
        )
        == old
    )


def test_adding_a_missing_key_appends_it_in_st_layout() -> None:
    old = fixture_text("settings.seed.default-content.json")
    data = loads_st(old)
    assert "nanogpt_provider" not in data["oai_settings"]
    new = apply_patch_text(old, [PatchEdit(("oai_settings", "nanogpt_provider"), "")])
    last_key = list(data["oai_settings"])[-1]
    assert new.count('"nanogpt_provider": ""') == 1
    assert list(loads_st(new)["oai_settings"])[-1] == "nanogpt_provider"
    assert loads_st(new)["oai_settings"][last_key] == data["oai_settings"][last_key]
    # Inserted as ",\n        "key": value" right after the old last value.
    p, old_end, new_end = changed_region(old, new)
    assert old_end == p
    assert new[p:new_end] == ',\n        "nanogpt_provider": ""'


def test_adding_into_an_empty_object_and_creating_missing_parents() -> None:
    old = dumps_st({"a": {}, "b": {"c": 1}, "z": [1]})
    new = apply_patch_text(old, [PatchEdit(("a", "k"), [1, {"x": "é"}]), PatchEdit(("b", "d", "e"), {})])
    assert new == dumps_st({"a": {"k": [1, {"x": "é"}]}, "b": {"c": 1, "d": {"e": {}}}, "z": [1]})


def test_deleting_keys_first_middle_last_and_only() -> None:
    doc = {"o": {"first": 1, "mid": [1, 2], "last": {"x": 1}}, "solo": {"only": "é"}, "end": None}
    text = dumps_st(doc)
    for path in [("o", "first"), ("o", "mid"), ("o", "last"), ("solo", "only"), ("end",)]:
        edits = [PatchEdit(path, delete=True)]
        assert apply_patch_text(text, edits) == dumps_st(expected_data(doc, edits)), path
    # Deleting something that is not there changes nothing (undo of an add that was already undone).
    assert apply_patch_text(text, [PatchEdit(("o", "nope"), delete=True)]) == text
    assert apply_patch_text(text, [PatchEdit(("nope", "deeper"), delete=True)]) == text


def test_non_ascii_and_escaped_neighbours_are_untouched() -> None:
    doc = {
        "before": '日本語 \u2028 emoji 😀 \\ "quoted" \u0001',
        "target": "old",
        "after": "ünïcödé \ud800",
        "nested": {"t": 1, "n": "\t\n"},
    }
    text = dumps_st(doc)
    new = apply_patch_text(text, [PatchEdit(("target",), "ñew 😀"), PatchEdit(("nested", "t"), "🦜")])
    assert new == dumps_st({**doc, "target": "ñew 😀", "nested": {"t": "🦜", "n": "\t\n"}})
    assert text.split('"target"')[0] == new.split('"target"')[0]


def test_other_layouts_keep_their_formatting() -> None:
    # A hand-edited file: two-space indent, CRLF, odd spacing. Only the value's bytes change.
    text = '{\r\n  "a" :  1 ,\r\n  "b": {\r\n    "c": "x"\r\n  },\r\n  "arr": [ 1, 2 ,3 ]\r\n}\r\n'
    assert apply_patch_text(text, [PatchEdit(("b", "c"), "yy")]) == text.replace('"x"', '"yy"')
    assert apply_patch_text(text, [PatchEdit(("arr", 2), 30)]) == text.replace("3 ]", "30 ]")
    added = apply_patch_text(text, [PatchEdit(("b", "d"), [1])])
    assert added == text.replace('"c": "x"', '"c": "x",\r\n    "d": [\r\n      1\r\n    ]')
    minified = '{"a":1,"b":{"c":"x"}}'
    assert (
        apply_patch_text(minified, [PatchEdit(("b", "d"), {"e": [1.0]})])
        == '{"a":1,"b":{"c":"x","d":{"e":[1]}}}'
    )


def test_duplicate_keys_are_refused_rather_than_patched_wrongly() -> None:
    # JSON.parse keeps the last duplicate; patching the first would silently do nothing.
    text = '{\n    "a": 1,\n    "a": 2\n}'
    with pytest.raises(PatchError, match="duplicated"):
        apply_patch_text(text, [PatchEdit(("a",), 3)])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (PatchEdit(("a", "b"), 1), "not an object"),
        (PatchEdit(("list", 5), 1), "out of range"),
        (PatchEdit((), 1), "non-empty"),
    ],
)
def test_impossible_edits_raise_patch_error(edit: PatchEdit, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        apply_patch_text(dumps_st({"a": 1, "list": [1]}), [edit])


def test_old_values_and_undo_restore_the_original_text() -> None:
    old = fixture_text("settings.nanogpt-source-selected.json")
    data = loads_st(old)
    edits = [PatchEdit(PPP, "merge"), PatchEdit(("oai_settings", "brand_new_key"), True)]
    olds = old_values(data, edits)
    assert olds == (
        OldValue(PPP, "single", True),
        OldValue(("oai_settings", "brand_new_key"), None, False),
    )
    new = apply_patch_text(old, edits)
    assert apply_patch_text(new, undo_edits(olds)) == old


# --- property: any ST-written document, patched anywhere, is exactly ST's output of the patched object ---

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
# Keys without JS array-index names: an added "7" would be enumerated first by JavaScript, while
# patching appends it (both parse to the same object; only the whole-file comparison would differ).
keys = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="0123456789"), max_size=6)
values = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(keys, c, max_size=4)),
    max_leaves=25,
)
documents = st.dictionaries(keys, values, min_size=1, max_size=6)


def _all_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out.extend(_all_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*prefix, i))
            out.extend(_all_paths(v, (*prefix, i)))
    return out


def _object_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if isinstance(value, dict) else []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_object_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_object_paths(v, (*prefix, i)))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, data=st.data())
def test_property_patch_anywhere_equals_st_output(doc: dict[str, Any], data: st.DataObject) -> None:
    text = dumps_st(doc)
    kind = data.draw(st.sampled_from(["replace", "add", "delete"]))
    if kind == "replace":
        path = data.draw(st.sampled_from(_all_paths(doc)))
        edit = PatchEdit(path, data.draw(values))
    elif kind == "add":
        parent = data.draw(st.sampled_from(_object_paths(doc)))
        obj = doc
        for element in parent:
            obj = obj[element]  # type: ignore[index]
        key = data.draw(keys.filter(lambda k: k not in obj))
        edit = PatchEdit((*parent, key), data.draw(values))
    else:
        candidates = [p for p in _all_paths(doc) if isinstance(p[-1], str)]
        assume(candidates)
        edit = PatchEdit(data.draw(st.sampled_from(candidates)), delete=True)
    new = apply_patch_text(text, [edit])
    expected = expected_data(doc, [edit])
    assert js_equal(loads_st(new), expected)
    assert new == dumps_st(expected)


@settings(max_examples=200, deadline=None)
@given(doc=documents, data=st.data(), spaced=st.booleans())
def test_property_other_layouts_change_no_byte_outside_the_value(
    doc: dict[str, Any], data: st.DataObject, spaced: bool
) -> None:
    # Minified or "a, b: c" layouts (not ST's): the changed bytes fit inside the old value's text.
    seps = (", ", ": ") if spaced else (",", ":")
    text = json.dumps(doc, separators=seps, ensure_ascii=False)
    path = data.draw(st.sampled_from(_all_paths(doc)))
    old_value: Any = doc
    for element in path:
        old_value = old_value[element]
    new_value = data.draw(values)
    new = apply_patch_text(text, [PatchEdit(path, new_value)])
    assert js_equal(loads_st(new), expected_data(doc, [PatchEdit(path, new_value)]))
    p, old_end, _ = changed_region(text, new)
    assert old_end - p <= len(json.dumps(old_value, separators=seps, ensure_ascii=False))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, data=st.data())
def test_property_file_round_trip_changes_only_the_patched_key(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    # Through the real file path: write as ST would, read, patch, write, read back.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "settings.json"
        path.write_text(dumps_st(doc), encoding="utf-8")
        key = data.draw(st.sampled_from(list(doc)))
        new_value = data.draw(values)
        result = write_patched(read_document(path), [PatchEdit((key,), new_value)])
        after = read_document(path)
        assert after.sha256 == result.new_sha256 or not result.changed
        assert after.data.keys() == loads_st(dumps_st(doc)).keys()
        for other, value in doc.items():
            if other != key:
                assert js_equal(after.data[other], value)
        assert js_equal(after.data[key], new_value)
        assert after.text == dumps_st({**doc, key: new_value})
        assert sorted(os.listdir(tmp)) == ["settings.json"]
