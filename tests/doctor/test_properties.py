"""Property: whatever the settings, the doctor never writes a PPP value the detected ST version lacks."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import diagnose
from nanogpt_companion.sillytavern.ppp import ALL_PPP_VALUES, allowed_ppp_values
from tests.doctor.helpers import catalogue, nanogpt_settings

CATALOGUE = catalogue()
VERSIONS = st.one_of(
    st.none(),
    st.tuples(st.just(1), st.integers(10, 19), st.integers(0, 12)).map(lambda v: ".".join(map(str, v))),
)
PPP_VALUES = st.sampled_from([*sorted(ALL_PPP_VALUES), "claude", "bogus", None])
MODELS = st.sampled_from(
    [*CATALOGUE, "gpt-4o-mini", "ArliAI/Gemma-3-27B-ArliAI-RPMax-v3", "", "unknown/model"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=VERSIONS,
    source=st.sampled_from(["nanogpt", "custom"]),
    ppp=PPP_VALUES,
    preset_ppp=PPP_VALUES,
    profile_ppp=st.sampled_from(["none", "merge", "strict", "single", "semi_tools"]),
    tools=st.sampled_from([True, False, None]),
    inline_key=st.sampled_from(["media_inlining", "image_inlining", None]),  # must never matter
    inline=st.booleans(),
    model=MODELS,
    with_catalogue=st.booleans(),
)
def test_never_a_ppp_value_the_version_does_not_know(
    version, source, ppp, preset_ppp, profile_ppp, tools, inline_key, inline, model, with_catalogue
):
    s = nanogpt_settings(
        chat_completion_source=source,
        custom_url="https://nano-gpt.com/api/v1",
        nanogpt_model=model,
        custom_model=model,
    )
    oai = s["oai_settings"]
    if version is None:
        del s["currentVersion"]
    for key, value in (("custom_prompt_post_processing", ppp), ("function_calling", tools)):
        if value is None:
            oai.pop(key, None)
        else:
            oai[key] = value
    oai.pop("media_inlining", None)
    if inline_key is not None:
        oai[inline_key] = inline
    s["extension_settings"]["connectionManager"]["profiles"] = [
        {
            "id": "p",
            "mode": "cc",
            "name": "p",
            "api": source,
            "model": model,
            "prompt-post-processing": profile_ppp,
        }
    ]
    preset = {"chat_completion_source": source}
    if preset_ppp is not None:
        preset["custom_prompt_post_processing"] = preset_ppp
    ctx = DoctorContext.build(s, presets={"p": preset}, catalogue=CATALOGUE if with_catalogue else None)
    allowed = allowed_ppp_values(ctx.st_version)
    findings = diagnose(ctx)
    v = ctx.st_version
    for finding in findings:
        for op in finding.patch:
            if op.path[-1] not in ("custom_prompt_post_processing", "prompt-post-processing"):
                continue
            assert op.value in allowed, (finding.rule, op.value, v)
            assert op.value != ""
            # Issue 10 item 1: images survive every mode since 1.12.8, so a user on single or strict is
            # never moved to a looser mode (only to the "with tools" twin when tools would be lost).
            old = "" if op.old in (None, "none") else op.old
            if old in ("single", "strict", "strict_tools"):
                assert op.value in ("strict_tools",), (finding.rule, old, op.value)
            if finding.rule in ("ppp.nanogpt", "ppp.tools") and source == "nanogpt":
                # Items 2 and 3, built-in source: no PPP at all before 1.13.0, no *_tools before 1.16.0.
                assert not v.older_than((1, 13, 0)), (finding.rule, v)
                if v.older_than((1, 16, 0)):
                    assert not op.value.endswith("_tools"), (finding.rule, op.value, v)
    # Deterministic: a second run gives the same ids in the same order.
    assert [f.id for f in diagnose(ctx)] == [f.id for f in findings]
