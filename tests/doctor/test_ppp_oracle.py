"""The doctor's Prompt Post-Processing table against SillyTavern's own converter, version by version.

``tests/realst/ppp_oracle.mjs`` imports ``src/prompt-converters.js`` from a real ST install and runs
``postProcessPrompt`` for every value that version defines over fixed message lists. These tests derive
from its output what each value really does (tools kept, roles merged, mid-chat system turned into user,
a user-first placeholder, one single message, names folded, images kept) and require the doctor's table
(``sillytavern/ppp.py``) and labels (``sillytavern/labels.py``) to say exactly that (issue 9 item 6). The
doctor's decisions themselves (the PPP rules on the settings each version wrote, and the extension's
error-signature choices) are then run through the same converter: what the user ends up with must do what
the doctor says it does in that version.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import diagnose
from nanogpt_companion.doctor.rules.common import ppp_choices
from nanogpt_companion.domain import CatalogEntry
from nanogpt_companion.sillytavern.behaviour import tool_calling
from nanogpt_companion.sillytavern.labels import ppp_labels
from nanogpt_companion.sillytavern.ppp import DEPRECATED_ALIASES, MODES, TOOL_STRIPPING, allowed_ppp_values
from nanogpt_companion.sillytavern.version import STVersion, parse_version
from tests.realst.install import STInstallError, ensure_sillytavern
from tests.realst.stack import load_version_fixture
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


# The doctor's decisions, not only its table: every value a user can have, on both NanoGPT connections, with
# function calling and inline images on and off, diagnosed on the settings file that ST version wrote, and
# the outcome (the fix's value, or the value left alone) run through that version's own converter.
CONNECTIONS = {"nanogpt": "settings.nanogpt.json", "custom": "settings.custom-nanogpt.json"}
VISION_MODEL = "openai/gpt-4o"  # vision, no family override: PPP advice comes from the rules alone
CATALOGUE = {
    VISION_MODEL: CatalogEntry(
        id=VISION_MODEL, name="GPT-4o", vendor="openai", context_length=128000, capabilities={"vision": True}
    )
}


def outcome(version: str, source: str, current: str, *, tools: bool, images: bool) -> tuple[str, bool]:
    """The PPP value the user ends up with if they take the doctor's advice, and whether it was advice."""
    settings = copy.deepcopy(load_version_fixture(version, CONNECTIONS[source]))
    view = settings["oai_settings"]
    view.update(custom_prompt_post_processing=current, function_calling=tools)
    view["nanogpt_model" if source == "nanogpt" else "custom_model"] = VISION_MODEL
    view["media_inlining" if "media_inlining" in view else "image_inlining"] = images
    findings = diagnose(DoctorContext.build(settings, catalogue=CATALOGUE))
    fixes = [f for f in findings if f.rule in ("ppp.nanogpt", "ppp.tools") and f.patch]
    assert len(fixes) <= 1, [f.id for f in fixes]
    if not fixes:
        return current, False
    [op] = fixes[0].patch
    assert op.path == ("oai_settings", "custom_prompt_post_processing") and op.old == current
    return str(op.value), True


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_the_doctors_ppp_decisions_hold_under_sts_converter(version: str) -> None:
    """What the doctor leaves or writes keeps tools whenever ST sends them, merges roles when it fills an
    unset value, is a value ST defines, never brings *_tools where ST sends none, and does not depend on
    inline images (ST keeps image parts in every mode: issue 10 items 1 and 2, issue 9 item 6)."""
    data = oracle(version)
    v = version_of(version)
    defined = set(data["types"].values())
    checked = 0
    for source, tools, current in itertools.product(
        CONNECTIONS, (False, True), sorted(allowed_ppp_values(v))
    ):
        ends, advised = outcome(version, source, current, tools=tools, images=True)
        assert (ends, advised) == outcome(version, source, current, tools=tools, images=False), (
            source,
            current,
        )
        seen = behaviour(data["results"][ends], data["placeholder"])
        where = (source, tools, current, ends)
        assert seen["keeps_images"], where
        assert ends in defined, where
        sends_tools = tools and tool_calling(v, source) is True  # type: ignore[arg-type]
        if sends_tools:
            assert seen["keeps_tools"], where  # a tool-stripping value never stays or gets written
        elif advised:
            assert not ends.endswith("_tools"), where  # no *_tools where ST sends no tools
        if current == "":
            assert advised and seen["merges_roles"], where  # "None" is filled with a merging mode
        elif advised:
            before = behaviour(data["results"][current], data["placeholder"])
            assert sends_tools and not before["keeps_tools"], where  # a user's pick moves only for tools
            # ... to its "with tools" twin: same clean-up, tools kept (single has none: strict_tools).
            twin = {**before, "keeps_tools": True}
            if current == "single":
                twin.update(single_message=False, inserts_placeholder=True)
            assert seen == twin, where
        checked += 1
    assert checked == 2 * 2 * len(allowed_ppp_values(v))


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_the_extensions_error_fixes_do_what_they_promise_under_sts_converter(version: str) -> None:
    """The error-signature path's choices (``ppp_choices``) as ST's converter runs them: "merge" merges,
    "semi" also turns mid-chat system messages into user turns, "strict" also starts with a user turn, and
    tools survive exactly where this ST sends them (issue 10 item 6)."""
    data = oracle(version)
    v = version_of(version)
    promises = {
        "merge": {"merges_roles"},
        "semi": {"merges_roles", "system_to_user"},
        "strict": {"merges_roles", "system_to_user", "user_first"},
    }
    for source, tools in itertools.product(CONNECTIONS, (False, True)):
        settings = copy.deepcopy(load_version_fixture(version, CONNECTIONS[source]))
        settings["oai_settings"]["function_calling"] = tools
        choices = ppp_choices(DoctorContext.build(settings, catalogue=CATALOGUE))["choices"]
        sends_tools = tools and tool_calling(v, source) is True  # type: ignore[arg-type]
        for intent, promised in promises.items():
            value = choices[intent]
            assert value in set(data["types"].values()), (source, tools, intent)
            seen = behaviour(data["results"][value], data["placeholder"])
            assert all(seen[p] for p in promised), (source, tools, intent, value)
            if sends_tools:
                assert seen["keeps_tools"], (source, intent, value)
            else:
                assert not value.endswith("_tools"), (source, tools, intent, value)
