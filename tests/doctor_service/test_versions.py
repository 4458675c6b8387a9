"""Issues 3 and 10: every ST version branch through the running service (currentVersion edited).

The service must never write a value the user's ST does not know: ``*_tools`` PPP values exist from
1.13.1, so with function calling on an older ST only gets a suggestion (``merge`` would drop the tools).
What ST does decides, per source: the built-in NanoGPT source gets no PPP before 1.13.0 (ST ignores it
there) and sends no tools before 1.16.0 (so ``merge`` loses nothing and is applied).
"""

from __future__ import annotations

import json

import pytest

from tests.doctor_service.conftest import (
    StartCompanion,
    journalled,
    nanogpt_settings,
    ppp_of,
    settle,
    wait_until,
)
from tests.doctor_service.test_bad_input import report
from tests.fakes.st_fixtures import MakeSTInstall, SecretsKind, UserSpec


@pytest.mark.parametrize(
    ("version", "source", "function_calling", "expected", "policy"),
    [
        ("1.12.14", "nanogpt", False, None, "advice"),  # ST < 1.13.0 ignores PPP for this source
        ("1.12.14", "custom", False, "merge", "auto"),
        ("1.12.14", "custom", True, "merge", "ask"),
        ("1.13.0", "nanogpt", False, "merge", "auto"),
        ("1.13.0", "nanogpt", True, "merge", "auto"),  # no tools for the NanoGPT source before 1.16.0
        ("1.13.0", "custom", True, "merge", "ask"),
        ("1.13.1", "nanogpt", True, "merge", "auto"),
        ("1.13.1", "custom", True, "merge_tools", "auto"),
        ("1.15.2", "nanogpt", True, "merge", "auto"),
        ("1.16.0", "nanogpt", True, "merge_tools", "auto"),
        ("1.18.0", "nanogpt", False, "merge", "auto"),
        ("1.18.3", "nanogpt", True, "merge_tools", "auto"),
    ],
)
async def test_version_branches(
    make_st_install: MakeSTInstall,
    start_companion: StartCompanion,
    version: str,
    source: str,
    function_calling: bool,
    expected: str | None,
    policy: str,
) -> None:
    settings = nanogpt_settings("", function_calling=function_calling)
    settings["currentVersion"] = version
    if source == "custom":
        settings["oai_settings"].update(
            chat_completion_source="custom", custom_url="https://nano-gpt.com/api/v1"
        )
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
        assert [e.new_value for e in await journalled(companion, 1)] == [expected]
    else:
        assert finding is not None
        if policy == "advice":
            assert finding["patch"] == [] and finding["details"]["kind"] == "ignored"
        else:
            assert finding["policy"] == "ask"
            assert finding["patch"][0]["value"] == expected
            assert "tool" in finding["explanation"]
        await settle(0.3)
        assert path.read_bytes() == original
    text = path.read_text(encoding="utf-8")
    if version < "1.13.1":
        assert "_tools" not in json.loads(text)["oai_settings"]["custom_prompt_post_processing"]
