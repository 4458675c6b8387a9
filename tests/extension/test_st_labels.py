"""The extension's names for ST's settings (st-extension/src/st-labels.js) are the words each supported ST
version shows next to those controls in its public/index.html."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.realst.install import ensure_sillytavern
from tests.realst.versions import ST_VERSIONS

LABELS_JS = Path(__file__).resolve().parents[2] / "st-extension" / "src" / "st-labels.js"
# How far before the control its heading may be (ST puts the <h4> or the range title just above it).
WINDOW = 2500


def _labels() -> dict[str, dict[str, str]]:
    script = f"import('{LABELS_JS.as_uri()}').then(m => console.log(JSON.stringify(m.SETTING_LABELS)))"
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    data: dict[str, dict[str, str]] = json.loads(out.stdout)
    return data


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_every_label_is_sts_own_text_next_to_its_control(version: str) -> None:
    html = (ensure_sillytavern(version) / "public" / "index.html").read_text(encoding="utf-8")
    for path, entry in _labels().items():
        if "since" in entry and _version(version) < _version(entry["since"]):
            assert f'id="{entry["control"].removeprefix("#")}"' not in html, f"{version} has {path} after all"
            continue
        control_id = entry["control"].removeprefix("#")
        found = re.search(rf'id="{re.escape(control_id)}"', html)
        assert found, f"{version}: no #{control_id} in index.html ({path})"
        before = html[max(0, found.start() - WINDOW) : found.end() + 400]
        # The label is an element's text, a data-i18n key, or the control's placeholder.
        assert (
            re.search(rf">\s*{re.escape(entry['label'])}\s*<", before)
            or f'placeholder="{entry["label"]}"' in before
        ), f"{version}: {entry['label']!r} is not the text ST shows at #{control_id}"
