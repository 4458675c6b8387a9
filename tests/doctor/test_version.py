from __future__ import annotations

import pytest

from nanogpt_companion.sillytavern.ppp import ALL_PPP_VALUES, allowed_ppp_values
from nanogpt_companion.sillytavern.version import STVersion, detect_st_version, parse_version
from tests.doctor.helpers import full_settings, load_st


def test_current_version_from_real_fixture_is_exact():
    v = detect_st_version(full_settings())
    assert v == STVersion((1, 18, 0), "currentVersion")
    assert v.exact and v.display == "1.18.0"
    assert v.knows_tools_ppp and v.knows_single_ppp and v.media_inlining and v.nanogpt_provider


def test_seed_without_version_or_keys_is_unknown():
    v = detect_st_version(load_st("settings.seed.default-content.json"))
    assert v.source == "unknown" and v.version is None and v.display is None
    assert not (v.knows_single_ppp or v.knows_tools_ppp or v.media_inlining or v.list_secrets)
    assert allowed_ppp_values(v) == {"", "merge", "strict"}


def _keys_only(**changes: object) -> dict[str, object]:
    settings = full_settings()
    del settings["currentVersion"]
    oai = settings["oai_settings"]
    for key, value in changes.items():
        if value is None:
            oai.pop(key, None)
        else:
            oai[key] = value
    return settings


def test_key_evidence_gives_lower_bounds():
    assert detect_st_version(_keys_only()).version == (1, 18, 0)  # nanogpt_provider present
    v115 = detect_st_version(_keys_only(nanogpt_provider=None))
    assert v115.version == (1, 15, 0) and v115.source == "keys" and v115.display == ">=1.15.0"
    assert v115.media_inlining and not v115.nanogpt_provider


def test_image_inlining_means_before_1_15_and_list_secrets_raise_to_1_13_1():
    settings = _keys_only(nanogpt_provider=None, media_inlining=None, image_inlining=True)
    v = detect_st_version(settings)
    assert not v.media_inlining and v.before == (1, 15, 0)
    assert not v.knows_tools_ppp  # show_thoughts/enable_web_search only prove 1.12.13
    listed = detect_st_version(settings, "list")
    assert listed.knows_tools_ppp and listed.list_secrets and not listed.media_inlining


def test_flat_secrets_prove_older_than_1_13_1():
    settings = _keys_only(nanogpt_provider=None, media_inlining=None, image_inlining=True)
    v = detect_st_version(settings, "flat")
    assert v.older_than((1, 13, 5)) and v.older_than((1, 13, 1)) and not v.older_than((1, 13, 0))
    assert not v.knows_tools_ppp


def test_contradictory_evidence_claims_nothing():
    v = detect_st_version(_keys_only(), "flat")  # nanogpt_provider (1.18) + flat secrets (<1.13.1)
    assert v.source == "unknown"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.18.0", (1, 18, 0)), ("1.13.0-staging", (1, 13, 0)), ("1.12", (1, 12, 0)), ("x", None), (3, None)],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.12.9", {"", "merge", "strict"}),
        ("1.12.10", {"", "merge", "strict", "semi"}),
        ("1.13.0", {"", "merge", "strict", "semi", "single"}),
        ("1.13.1", ALL_PPP_VALUES),
        ("1.15.0", ALL_PPP_VALUES),
    ],
)
def test_allowed_ppp_values_per_version(version, expected):
    settings = full_settings()
    settings["currentVersion"] = version
    assert allowed_ppp_values(detect_st_version(settings)) == expected


def test_older_than_only_when_proven():
    settings = full_settings()
    settings["currentVersion"] = "1.13.4"
    assert detect_st_version(settings).older_than((1, 13, 5))
    settings["currentVersion"] = "1.13.5"
    assert not detect_st_version(settings).older_than((1, 13, 5))
    assert not detect_st_version(load_st("settings.seed.default-content.json")).older_than((1, 13, 5))
