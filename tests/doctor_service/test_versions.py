"""Issue 3: every ST version branch through the running service (currentVersion edited in the fixture).

The service must never write a value the user's ST does not know: ``*_tools`` PPP values exist from
1.13.1, so with function calling on an older ST only gets a suggestion (``merge`` would drop the tools).
"""

from __future__ import annotations

import json

import pytest

from tests.doctor_service.conftest import (
    StartCompanion,
    journal,
    nanogpt_settings,
    ppp_of,
    settle,
    wait_until,
)
from tests.doctor_service.test_bad_input import report
from tests.fakes.st_fixtures import MakeSTInstall, SecretsKind, UserSpec


@pytest.mark.parametrize(
    ("version", "function_calling", "expected", "policy"),
    [
        ("1.12.14", False, "merge", "auto"),
        ("1.12.14", True, "merge", "ask"),
        ("1.13.0", False, "merge", "auto"),
        ("1.13.0", True, "merge", "ask"),
        ("1.13.1", True, "merge_tools", "auto"),
        ("1.15.2", True, "merge_tools", "auto"),
        ("1.18.0", False, "merge", "auto"),
        ("1.18.3", True, "merge_tools", "auto"),
    ],
)
async def test_version_branches(
    make_st_install: MakeSTInstall,
    start_companion: StartCompanion,
    version: str,
    function_calling: bool,
    expected: str,
    policy: str,
) -> None:
    settings = nanogpt_settings("", function_calling=function_calling)
    settings["currentVersion"] = version
    secrets: SecretsKind = "flat" if version < "1.13.1" else "multi"
    st = make_st_install(users={"default-user": UserSpec(settings=settings, secrets=secrets)})
    path = st.user().settings
    original = path.read_bytes()
    companion = await start_companion(st)
    data = await report(companion)
    assert data["st_version"] == version
    [finding] = [f for f in data["findings"] if f["rule"] == "ppp.nanogpt"] or [None]
    if policy == "auto":
        await wait_until(lambda: ppp_of(path) == expected)
        assert [e.new_value for e in await journal(companion)] == [expected]
    else:
        assert finding is not None
        assert finding["policy"] == "ask"
        assert finding["patch"][0]["value"] == expected
        assert "tool" in finding["explanation"]
        await settle(0.3)
        assert path.read_bytes() == original
    text = path.read_text(encoding="utf-8")
    if version < "1.13.1":
        assert "_tools" not in json.loads(text)["oai_settings"]["custom_prompt_post_processing"]
