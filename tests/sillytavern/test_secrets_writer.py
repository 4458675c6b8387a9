"""Copying the NanoGPT key into an ST key slot, and undoing it, on real secrets.json files in both formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanogpt_companion.sillytavern.errors import ConcurrentModification, STDataError
from nanogpt_companion.sillytavern.secrets import read_secret
from nanogpt_companion.sillytavern.secrets_writer import (
    COMPANION_LABEL,
    SlotChange,
    SlotTaken,
    _create_exclusive,
    fingerprint,
    install_key,
    slot_state,
    undo_install,
)
from nanogpt_companion.sillytavern.stjson import dumps_st
from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY
from tests.fakes.st_fixtures import fixture_path

CUSTOM_KEY = "sk-custom-FAKE-2222222"  # the other provider's key in both secrets fixtures


def _copy(tmp_path: Path, fixture: str) -> Path:
    path = tmp_path / "secrets.json"
    path.write_bytes(fixture_path(fixture).read_bytes())
    return path


def _data(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_list_format_adds_an_active_entry_and_keeps_the_other_key(tmp_path: Path) -> None:
    path = _copy(tmp_path, "secrets.multi-key.example.json")
    before = path.read_bytes()
    change = install_key(path, "custom", SUBSCRIBER_KEY)
    assert change.changed and change.layout == "list" and change.added_id
    data = _data(path)
    custom = data["api_key_custom"]
    assert [e["active"] for e in custom] == [False, True]
    assert custom[0]["value"] == CUSTOM_KEY  # the other provider's key is still there
    assert custom[1] == {
        "id": change.added_id,
        "value": SUBSCRIBER_KEY,
        "label": COMPANION_LABEL,
        "active": True,
    }
    assert data["api_key_nanogpt"] == json.loads(before)["api_key_nanogpt"]
    # ST's own reader now finds the NanoGPT key in the Custom slot.
    found = read_secret(path, "api_key_custom")
    assert found is not None and found.reveal() == SUBSCRIBER_KEY
    assert slot_state(path, "custom", SUBSCRIBER_KEY) == "ours"
    # What is kept for undo names ids and a fingerprint, never the key.
    assert SUBSCRIBER_KEY not in json.dumps(change.as_json())
    assert change.fingerprint == fingerprint(SUBSCRIBER_KEY)

    outcome, _ = undo_install(path, SlotChange.from_json(change.as_json()))
    assert outcome == "reverted"
    assert path.read_bytes() == before  # byte for byte what ST had written


def test_list_format_same_key_already_active_is_unchanged(tmp_path: Path) -> None:
    path = _copy(tmp_path, "secrets.multi-key.example.json")
    before = path.read_bytes()
    change = install_key(path, "nanogpt", SUBSCRIBER_KEY)
    assert not change.changed
    assert path.read_bytes() == before
    assert undo_install(path, change)[0] == "nothing_to_undo"


def test_list_format_reactivates_an_existing_entry_instead_of_adding(tmp_path: Path) -> None:
    path = _copy(tmp_path, "secrets.multi-key.example.json")
    before = path.read_bytes()
    change = install_key(path, "nanogpt", PAYG_KEY)  # the inactive first entry holds it
    assert change.changed and change.added_id is None
    entries = _data(path)["api_key_nanogpt"]
    assert len(entries) == 2 and [e["active"] for e in entries] == [True, False]
    assert undo_install(path, change)[0] == "reverted"
    assert path.read_bytes() == before


def test_undo_keeps_a_key_the_user_activated_meanwhile(tmp_path: Path) -> None:
    path = _copy(tmp_path, "secrets.multi-key.example.json")
    change = install_key(path, "custom", SUBSCRIBER_KEY)
    data = _data(path)
    for entry in data["api_key_custom"]:
        entry["active"] = entry["value"] == CUSTOM_KEY  # the user picked their other key in ST
    data["api_key_custom"].append(
        {"id": "u-1", "value": "sk-other-FAKE-3", "label": "third", "active": False}
    )
    path.write_text(dumps_st(data), encoding="utf-8")
    outcome, _ = undo_install(path, change)
    assert outcome == "reverted"
    custom = _data(path)["api_key_custom"]
    assert [e["value"] for e in custom] == [CUSTOM_KEY, "sk-other-FAKE-3"]  # ours removed, theirs kept
    assert [e["active"] for e in custom] == [True, False]


def test_flat_format_fills_an_empty_slot_and_undo_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(dumps_st({"api_key_nanogpt": SUBSCRIBER_KEY}), encoding="utf-8")
    before = path.read_bytes()
    change = install_key(path, "generic", SUBSCRIBER_KEY)
    assert change.changed and change.layout == "flat" and change.created_slot
    assert _data(path) == {"api_key_nanogpt": SUBSCRIBER_KEY, "api_key_generic": SUBSCRIBER_KEY}
    assert undo_install(path, change)[0] == "reverted"
    assert path.read_bytes() == before


def test_flat_format_never_overwrites_another_key(tmp_path: Path) -> None:
    path = _copy(tmp_path, "secrets.legacy-flat.example.json")
    before = path.read_bytes()
    with pytest.raises(SlotTaken, match="already holds another key"):
        install_key(path, "custom", SUBSCRIBER_KEY)
    assert path.read_bytes() == before
    assert slot_state(path, "custom", SUBSCRIBER_KEY) == "other"


def test_flat_undo_leaves_a_key_the_user_typed_since(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(dumps_st({"api_key_nanogpt": SUBSCRIBER_KEY}), encoding="utf-8")
    change = install_key(path, "custom", SUBSCRIBER_KEY)
    path.write_text(
        dumps_st({"api_key_nanogpt": SUBSCRIBER_KEY, "api_key_custom": CUSTOM_KEY}), encoding="utf-8"
    )
    before = path.read_bytes()
    assert undo_install(path, change)[0] == "changed_since"
    assert path.read_bytes() == before


def test_missing_file_is_created_in_the_versions_format(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    change = install_key(path, "custom", SUBSCRIBER_KEY, default_layout="list")
    assert change.created_file
    entries = _data(path)["api_key_custom"]
    assert len(entries) == 1 and entries[0]["value"] == SUBSCRIBER_KEY and entries[0]["active"] is True
    assert path.stat().st_mode & 0o077 == 0  # a file of keys is the user's alone
    flat = tmp_path / "old" / "secrets.json"
    flat.parent.mkdir()
    install_key(flat, "custom", SUBSCRIBER_KEY, default_layout="flat")
    assert _data(flat) == {"api_key_custom": SUBSCRIBER_KEY}


def test_a_file_that_appeared_meanwhile_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text('{"api_key_openai": []}', encoding="utf-8")
    with pytest.raises(ConcurrentModification):
        _create_exclusive(path, b"{}")
    assert path.read_text(encoding="utf-8") == '{"api_key_openai": []}'
    assert [p.name for p in tmp_path.iterdir()] == ["secrets.json"]  # no temp file left behind


def test_a_link_out_of_the_users_folder_is_never_written_through(tmp_path: Path) -> None:
    user = tmp_path / "data" / "default-user"
    user.mkdir(parents=True)
    outside = tmp_path / "elsewhere.json"
    entry = {"id": "x", "value": "v", "label": "l", "active": True}
    outside.write_text(dumps_st({"api_key_custom": [entry]}))
    before = outside.read_bytes()
    (user / "secrets.json").symlink_to(outside)
    with pytest.raises(STDataError):
        install_key(user / "secrets.json", "custom", SUBSCRIBER_KEY, within=user)
    assert outside.read_bytes() == before
