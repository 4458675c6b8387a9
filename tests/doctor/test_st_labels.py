"""The words the doctor uses for ST's settings are ST's own, in every installed version (issue 10 item 16).

Each label in ``sillytavern/labels.py`` must be the text ST's ``public/index.html`` renders next to that
setting's control (a heading, checkbox text or option) in each version that has the control.
"""

from __future__ import annotations

import html
import re
from functools import cache

import pytest

from nanogpt_companion.sillytavern.labels import SETTING_LABELS, inline_media_label
from nanogpt_companion.sillytavern.version import STVersion, parse_version
from tests.realst.install import STInstallError, ensure_sillytavern
from tests.realst.versions import ST_VERSIONS

BEFORE = 1200  # how far before the control its heading may start (ST puts headings above inputs)
AFTER = 300  # checkbox texts follow the input


@cache
def index_html(version: str) -> str:
    try:
        folder = ensure_sillytavern(version)
    except STInstallError as exc:
        pytest.skip(f"SillyTavern {version} is not installed ({exc}); `python -m tests.realst.install`")
    text = (folder / "public" / "index.html").read_text(encoding="utf-8")
    return re.sub(r"\s+", " ", html.unescape(text))


def around(page: str, control: str) -> str | None:
    at = page.find(f'id="{control}"')
    return None if at < 0 else page[max(0, at - BEFORE) : at + AFTER]


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_setting_labels_are_the_texts_st_shows(version: str) -> None:
    page = index_html(version)
    missing = []
    for key, (control, label) in SETTING_LABELS.items():
        window = around(page, control)
        if window is None:
            assert key in ("image_inlining", "media_inlining"), f"{control} is not in {version}'s page"
            continue
        if f">{label}<" not in window.replace("> ", ">").replace(" <", "<"):
            missing.append((key, label))
    assert missing == []


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_the_inline_media_switch_is_named_as_this_version_names_it(version: str) -> None:
    page = index_html(version)
    parsed = parse_version(version)
    assert parsed is not None
    label = inline_media_label(STVersion(parsed, "currentVersion"))
    control = "openai_media_inlining" if label == "Send inline media" else "openai_image_inlining"
    window = around(page, control)
    assert window is not None and label in window
