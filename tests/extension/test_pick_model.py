"""Which model an endpoint switch picks when the address does not offer the one in use
(st-extension/src/format.js ``pickModel``), run by node on the extension's own module."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

FORMAT_JS = Path(__file__).resolve().parents[2] / "st-extension" / "src" / "format.js"


def _pick(previous: str | None, listed: list[str], catalog: list[dict[str, Any]], subscriber: bool) -> Any:
    script = (
        f"import('{FORMAT_JS.as_uri()}').then(({{ pickModel }}) => {{"
        "  const [previous, listed, catalog, subscriber] = JSON.parse(process.argv[1]);"
        "  const byId = new Map(catalog.map((e) => [e.id, e]));"
        "  console.log(JSON.stringify(pickModel(previous, listed, byId, { subscriber })));"
        "})"
    )
    args = json.dumps([previous, listed, catalog, subscriber])
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script, args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def _entry(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "vendor": model_id.split("/", maxsplit=1)[0], **extra}


SUB = {"subscription": {"included": True}}
PAID = {"subscription": {"included": False}}


def test_the_model_in_use_is_kept_when_listed_else_its_thinking_base() -> None:
    assert _pick("a/x", ["b/y", "a/x"], [], False) == {"id": "a/x", "reason": "same"}
    thinking = _entry("a/x:thinking", thinking_base="a/x")
    assert _pick("a/x:thinking", ["b/y", "a/x"], [thinking], False) == {"id": "a/x", "reason": "base"}
    assert _pick("a/x", [], [], False) == {"id": None, "reason": "none"}
    # Junk rows are no choice.
    assert _pick("a/x", ["bad id", ""], [], False) == {"id": None, "reason": "none"}


def test_closest_is_the_same_vendors_model_of_the_same_family() -> None:
    listed = ["ArliAI/Gemma-3-27B-ArliAI-RPMax-v3", "ArliAI/Derestricted-GLM-3.8-32b", "zai/glm-4"]
    catalog = [_entry(m, **SUB) for m in listed]
    picked = _pick("ArliAI/Derestricted-GLM-1.7", listed, catalog, True)
    assert picked == {"id": "ArliAI/Derestricted-GLM-3.8-32b", "reason": "closest"}


def test_for_a_subscriber_a_covered_model_wins_then_no_router_or_thinking_variant_then_newest() -> None:
    catalog = [
        _entry("v/family-paid", created=9, **PAID),
        _entry("v/other-old", created=1, **SUB),
        _entry("v/other-new", created=5, **SUB),
        _entry("v/auto", is_router=True, created=99, **SUB),
        _entry("v/other-new:thinking", thinking_base="v/other-new", created=99, **SUB),
    ]
    listed = [e["id"] for e in catalog]
    assert _pick("v/family-gone", listed, catalog, True)["id"] == "v/other-new"
    assert _pick("v/family-gone", listed, catalog, False)["id"] == "v/family-paid"  # same family first
    assert _pick(None, ["z/a", "y/b"], [], False) == {"id": "y/b", "reason": "closest"}
