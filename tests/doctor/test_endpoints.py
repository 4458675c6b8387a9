from __future__ import annotations

import pytest

from nanogpt_companion.nanogpt.endpoints import (
    ENDPOINTS,
    normalise_nanogpt_url,
    parse_nanogpt_url,
    recommend_endpoint,
)
from tests.doctor.helpers import payg, subscriber


def test_six_endpoints_with_expected_urls():
    assert {e.id: e.url for e in ENDPOINTS} == {
        "v1": "https://nano-gpt.com/api/v1",
        "subscription": "https://nano-gpt.com/api/subscription/v1",
        "paid": "https://nano-gpt.com/api/paid/v1",
        "personalized": "https://nano-gpt.com/api/personalized/v1",
        "v1legacy": "https://nano-gpt.com/api/v1legacy",
        "v1thinking": "https://nano-gpt.com/api/v1thinking",
    }
    fields = {e.id: e.reasoning_field for e in ENDPOINTS}
    assert fields["v1"] == "reasoning" and fields["v1legacy"] == "reasoning_content"
    assert fields["v1thinking"] == "content"
    assert all(e.chat_completion for e in ENDPOINTS)
    assert [e.id for e in ENDPOINTS if e.text_completion] == ["v1"]


@pytest.mark.parametrize(
    ("url", "expected", "problems"),
    [
        ("https://nano-gpt.com/api/v1", "https://nano-gpt.com/api/v1", ()),
        ("http://nano-gpt.com/api/v1", "https://nano-gpt.com/api/v1", ("http",)),
        ("https://nano-gpt.com/v1", "https://nano-gpt.com/api/v1", ("missing_api",)),
        (
            "https://nano-gpt.com/api/v1/chat/completions",
            "https://nano-gpt.com/api/v1",
            ("trailing_chat_completions",),
        ),
        ("https://nano-gpt.com/api/v1/models", "https://nano-gpt.com/api/v1", ("trailing_models",)),
        ("  https://nano-gpt.com/api/v1 ", "https://nano-gpt.com/api/v1", ("whitespace",)),
        ("https://nano-gpt.com/api/v1/", "https://nano-gpt.com/api/v1", ("trailing_slash",)),
        ("https://nano-gpt.com/api/v1/v1", "https://nano-gpt.com/api/v1", ("duplicate_v1",)),
        (
            "https://www.nano-gpt.com/api/subscription/v1",
            "https://nano-gpt.com/api/subscription/v1",
            ("www_host",),
        ),
        ("https://api.nano-gpt.com/api/v1thinking", "https://api.nano-gpt.com/api/v1thinking", ()),
        ("nano-gpt.com/api/v1legacy", "https://nano-gpt.com/api/v1legacy", ("no_scheme",)),
        ("https://nano-gpt.com/api", "https://nano-gpt.com/api/v1", ("missing_version",)),
        ("https://Nano-GPT.com/API/V1", "https://nano-gpt.com/api/v1", ("letter_case",)),
    ],
)
def test_parse_and_normalise(url, expected, problems):
    parsed = parse_nanogpt_url(url)
    assert parsed is not None
    assert parsed.normalised == expected
    assert set(parsed.problems) == set(problems)
    assert parsed.ok == (not problems)
    assert normalise_nanogpt_url(url) == expected
    # Normalising is idempotent: the fixed URL has nothing left to fix.
    again = parse_nanogpt_url(expected)
    assert again is not None and again.ok


def test_combined_mess():
    parsed = parse_nanogpt_url(" http://www.nano-gpt.com/v1/v1/chat/completions/ ")
    assert parsed is not None and parsed.endpoint_id == "v1"
    assert parsed.normalised == "https://nano-gpt.com/api/v1"
    assert {
        "whitespace",
        "http",
        "www_host",
        "missing_api",
        "duplicate_v1",
        "trailing_chat_completions",
    } <= set(parsed.problems)


def test_not_nanogpt_and_unknown_paths():
    assert parse_nanogpt_url("https://openrouter.ai/api/v1") is None
    assert parse_nanogpt_url("https://nano-gpt.com.evil.example/api/v1") is None
    assert parse_nanogpt_url("") is None and parse_nanogpt_url(None) is None
    assert normalise_nanogpt_url("https://openrouter.ai/api/v1/") == "https://openrouter.ai/api/v1/"
    odd = parse_nanogpt_url("https://nano-gpt.com/api/v2")
    assert odd is not None and odd.endpoint_id is None and "unknown_path" in odd.problems


def test_text_completion_accepts_bare_api():
    parsed = parse_nanogpt_url("https://nano-gpt.com/api", for_text_completion=True)
    assert parsed is not None and parsed.ok and parsed.endpoint_id == "v1"
    assert (
        normalise_nanogpt_url("https://nano-gpt.com/api/", for_text_completion=True)
        == "https://nano-gpt.com/api"
    )


def test_endpoint_ids():
    assert {parse_nanogpt_url(e.url).endpoint_id for e in ENDPOINTS} == {e.id for e in ENDPOINTS}  # type: ignore[union-attr]


def test_recommend_endpoint():
    assert recommend_endpoint(subscriber())[0] == "subscription"
    assert recommend_endpoint(subscriber("paygo"))[0] == "v1"
    assert recommend_endpoint(payg())[0] == "v1"
    assert recommend_endpoint(None)[0] == "v1"


def test_legacy_address_is_never_recommended_for_reasoning():
    """Issue 10 item 5: ST's Custom source reads `reasoning` and `reasoning_content` alike since 1.12.13
    (reasoning.js L81-84), so v1legacy shows no reasoning that v1 hides, on any ST version."""
    legacy = next(e for e in ENDPOINTS if e.id == "v1legacy")
    assert "1.13.5" not in legacy.description and "1.12.13" in legacy.description
    assert all(recommend_endpoint(account)[0] != "v1legacy" for account in (None, payg(), subscriber()))
