"""The doctor's Prompt Post-Processing table against SillyTavern's own converter, version by version.

``tests/realst/ppp_oracle.mjs`` imports ``src/prompt-converters.js`` from a real ST install and runs
``postProcessPrompt`` for every value that version defines over fixed message lists. These tests derive
from its output what each value really does (tools kept, roles merged, mid-chat system turned into user,
a user-first placeholder, one single message, names folded, images kept) and require the doctor's table
(``sillytavern/ppp.py``) and labels (``sillytavern/labels.py``) to say exactly that (issue 9 item 6).
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from nanogpt_companion.sillytavern.labels import ppp_labels
from nanogpt_companion.sillytavern.ppp import DEPRECATED_ALIASES, MODES, TOOL_STRIPPING, allowed_ppp_values
from nanogpt_companion.sillytavern.version import STVersion, parse_version
from tests.realst.install import STInstallError, ensure_sillytavern
from tests.realst.versions import ST_VERSIONS

ORACLE = Path(__file__).resolve().parents[1] / "realst" / "ppp_oracle.mjs"
Messages = list[dict[str, Any]]


def st_folder(version: str) -> Path:
    try:
        return ensure_sillytavern(version)
    except STInstallError as exc:
        pytest.skip(
            f"SillyTavern {version} is not installed and could not be installed ({exc}). Get it with "
            f"`python -m tests.realst.install {version}` (npm pack sillytavern@{version}, untar, "
            "npm install --omit=dev inside it)."
        )


@cache
def oracle(version: str) -> dict[str, Any]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (ST needs Node 20+)")
    done = subprocess.run(
        ["node", str(ORACLE), str(st_folder(version))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["st_version"] == version
    return data


def version_of(version: str) -> STVersion:
    parsed = parse_version(version)
    assert parsed is not None
    return STVersion(parsed, "currentVersion")


def roles(messages: Messages) -> list[str]:
    return [m["role"] for m in messages]


def behaviour(result: dict[str, Messages], placeholder: str) -> dict[str, bool]:
    """What one PPP value did to the oracle's message lists, in the terms of ``PPPMode``."""
    tools = result["tools"]
    runs = roles(result["role_runs"])
    mid = roles(result["mid_system"])
    first = next(m for m in result["assistant_first"] if m["role"] != "system")
    text = json.dumps(result["images"])
    images = [p for m in result["images"] if isinstance(m["content"], list) for p in m["content"]]
    names = result["names"]
    folded = any("Alice: U1" in str(m["content"]) for m in names)
    image_parts = sum(p.get("type") == "image_url" for p in images)
    return {
        "keeps_tools": any(m.get("tool_calls") for m in tools) and "tool" in roles(tools),
        "merges_roles": all(a != b for a, b in itertools.pairwise(runs)),
        "system_to_user": "system" not in mid[1:],
        "user_first": first["role"] == "user",
        "inserts_placeholder": any(m.get("content") == placeholder for m in result["assistant_first"]),
        "single_message": runs == ["user"],
        "folds_names": folded and not any("name" in m for m in names),
        "keeps_images": image_parts == 2 and "[object Object]" not in text,
    }


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_the_values_the_doctor_may_write_are_the_values_st_knows(version: str) -> None:
    data = oracle(version)
    v = version_of(version)
    defined = set(data["types"].values()) - set(DEPRECATED_ALIASES)
    offered = {option["value"] for option in data["ui"]}
    assert allowed_ppp_values(v) == defined == offered
    # A value ST does not know falls through as "no processing": why a wrong version guess undoes a fix.
    assert data["results"][data["unknown_value"]] == data["cases"]


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_the_option_labels_are_sts(version: str) -> None:
    data = oracle(version)
    assert {o["value"]: o["label"] for o in data["ui"]} == ppp_labels(version_of(version))


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_each_value_does_what_the_doctor_says(version: str) -> None:
    data = oracle(version)
    for value in allowed_ppp_values(version_of(version)):
        seen = behaviour(data["results"][value], data["placeholder"])
        mode = MODES[value]
        claimed = {
            "keeps_tools": mode.keeps_tools,
            "merges_roles": mode.merges_roles,
            "system_to_user": mode.system_to_user,
            "user_first": mode.user_first,
            # The placeholder is how the user-first promise is kept when the chat opens with a greeting;
            # `single` keeps it by making everything one user message instead.
            "inserts_placeholder": mode.user_first and not mode.single_message,
            "single_message": mode.single_message,
            "folds_names": mode.folds_names,
            "keeps_images": True,  # every mode since 1.12.8 (issue 10 item 1)
        }
        assert seen == claimed, value
        assert (value in TOOL_STRIPPING) is (not seen["keeps_tools"]), value
    for alias, target in DEPRECATED_ALIASES.items():
        assert data["results"][alias] == data["results"][target]
